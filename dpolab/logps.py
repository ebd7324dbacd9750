"""Log-probabilities of responses under a causal LM.

``log pi(y | x) = sum_t log pi(y_t | x, y_<t)`` over the response tokens only: the labels
hold the response token ids and -100 everywhere else (prompt and padding), exactly the
convention of ``transformers`` losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log p(labels[t] | ...)`` for each position, 0 where the label is ignored.

    ``logits[:, t]`` predicts ``labels[:, t + 1]``: the shift happens here. Logits are upcast
    to fp32 first (fp64 stays fp64): a bf16 log-softmax over a large vocabulary loses the
    small differences DPO is made of. ``cross_entropy`` computes it without materialising the full
    log-softmax tensor."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none",
                          ignore_index=IGNORE)
    return -nll.view(labels.shape)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor,
                   average: bool = False) -> torch.Tensor:
    """Per-sequence sum (or, with ``average``, mean) of response token log-probs."""
    per_token = token_logps(logits, labels)
    if not average:
        return per_token.sum(-1)
    n = (labels[:, 1:] != IGNORE).sum(-1).clamp(min=1)
    return per_token.sum(-1) / n


def model_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """One forward pass, then ``sequence_logps``."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return sequence_logps(logits, labels, average)
