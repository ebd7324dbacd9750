"""Worked solutions of notebook 02, supervised fine-tuning.

- ``sft_labels``: the label row of one example: -100 on the prompt and the padding, the
  response ids (its ``</s>`` included) where they stand. The prompt is given, not generated,
  so it is never trained on.
- ``sft_loss``: the SFT loss, ``-mean log p(y_t | x, y_<t)`` over the labelled tokens of the
  batch. The logits at position ``t`` predict the token at ``t + 1``, so the last logit and
  the first label are dropped before the cross-entropy; -100 labels are left out of the mean.
  This is what ``model(input_ids, labels=labels).loss`` computes in ``transformers``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def sft_labels(prompt_ids: list[int], response_ids: list[int], width: int) -> list[int]:
    """Labels of one SFT example, right-padded to ``width``: -100 on the prompt and on the
    padding, the response ids (ending in eos) at their own positions."""
    pad = width - len(prompt_ids) - len(response_ids)
    return [IGNORE] * len(prompt_ids) + list(response_ids) + [IGNORE] * pad


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens of a batch: logits ``(B, T, V)``,
    labels ``(B, T)`` with -100 where nothing is predicted; returns a scalar.

    Shift: ``logits[:, t]`` predicts ``labels[:, t + 1]``. The mean is over all labelled
    tokens of the batch at once (a long response weighs more than a short one)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
