"""Worked solutions of notebook 01, what is alignment.

- ``first_document``: a base-model response read generously: its tokens up to (not
  including) the first ``<s>``, where the model starts a new pretraining document, decoded,
  without the ``A:`` forum answers begin with.
- ``answer_logprob``: a probe of what a model knows that does not depend on how it
  decodes: ``log p(answer | <s> context) = sum_t log p(a_t | <s>, context, a_<t)`` over the
  answer's tokens only. The logits at position ``t`` predict the token at ``t + 1``, so the
  answer's first token is scored by the logits at the context's last position.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpolab.evaluate import Generation


def first_document(g: Generation, tok: PreTrainedTokenizerBase) -> str:
    """The response of ``g`` up to its first ``<s>``, decoded, without a leading ``A:``."""
    ids = g.response_ids
    if tok.bos_token_id in ids:
        ids = ids[:ids.index(tok.bos_token_id)]
    return tok.decode(ids, skip_special_tokens=True).strip().removeprefix("A:").strip()


def answer_logprob(lm: PreTrainedModel, tok: PreTrainedTokenizerBase, context: str,
                   answer: str) -> float:
    """``log p(" " + answer | <s> context)`` under ``lm``, summed over the answer's tokens."""
    context_ids = [tok.bos_token_id, *tok(context, add_special_tokens=False).input_ids]
    answer_ids = tok(" " + answer, add_special_tokens=False).input_ids
    ids = torch.tensor([context_ids + answer_ids])
    with torch.no_grad():
        logprobs = lm(input_ids=ids).logits[0, :-1].float().log_softmax(-1)  # row t predicts t+1
    start = len(context_ids) - 1
    picked = logprobs[start:].gather(1, torch.tensor(answer_ids)[:, None])
    return picked.sum().item()
