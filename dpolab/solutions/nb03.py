"""Worked solutions of notebook 03, the reward model.

- ``last_token_reward``: the reward of a sequence is the scalar head's output at its last
  real token, the response's ``</s>``, the one position whose hidden state has read the whole
  prompt and response. With right padding that is position ``attention_mask.sum() - 1``;
  the last column is padding for every row shorter than the batch.
- ``bt_loss``: the Bradley–Terry negative log-likelihood of the labels,
  ``mean(-log sigmoid(r_chosen - r_rejected))``, with ``logsigmoid`` (``log(sigmoid(x))``
  underflows to ``-inf`` for very negative ``x``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def last_token_reward(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The head's output ``values`` ``(B, T)`` read at each row's last real token of a
    right-padded batch (``attention_mask`` ``(B, T)``, 1 on tokens, 0 on padding); ``(B,)``."""
    last = attention_mask.sum(-1) - 1
    return values[torch.arange(values.shape[0]), last]


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean over the pairs of ``-log sigmoid(r_chosen - r_rejected)``; a scalar."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()
