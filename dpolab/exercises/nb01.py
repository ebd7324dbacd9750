"""Checks of notebook 01: reading a base-model response generously, and probing what the
model knows by the log-probability of an answer."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpolab import model
from dpolab.evaluate import Generation
from dpolab.exercises import Exercise, Wrong
from dpolab.solutions import nb01 as sol


@functools.cache
def _base() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return model.load(model.BASE)


def _diagnose_first_document(fn: Callable) -> None:
    _, tok = _base()
    bos = tok.bos_token_id

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    cases = [ids("A: 2 plus 2 is 4.") + [bos] + ids("Dear Tom, thank you.") + [bos] + ids("Q: Hi"),
             ids("It is Mell.") + [bos] + ids("A: Sable."),
             ids("A: Red.")]
    for response_ids in cases:
        g = Generation("What is 2 plus 2?", tok.decode(response_ids, skip_special_tokens=True),
                       False, [], list(response_ids))
        got, want = fn(g, tok), sol.first_document(g, tok)
        if not isinstance(got, str):
            raise Wrong(f"return the text (a str), got {type(got).__name__}")
        if got.strip() == want:
            continue
        whole = tok.decode(response_ids, skip_special_tokens=True).strip()
        if got.strip() in (whole, whole.removeprefix("A:").strip()):
            raise Wrong("you kept what follows the first <s>: there the model starts another "
                        "document, which is not its answer; cut the ids at the first <s>")
        if bos in response_ids:
            last = response_ids[:len(response_ids) - response_ids[::-1].index(bos) - 1]
            text = tok.decode(last, skip_special_tokens=True).strip()
            if got.strip() in (text, text.removeprefix("A:").strip()):
                raise Wrong("you cut at the last <s>: the answer ends at the first one")
        if got.strip() == "A: " + want or got.strip().removeprefix("A:").strip() == want:
            raise Wrong("the forum's 'A:' is still in front: drop it, it is part of the "
                        "pretraining format, not of the answer")
        if "<s>" in got:
            raise Wrong("special tokens are in the text: decode with skip_special_tokens=True")
        raise Wrong(f"got {got!r}, expected {want!r}: keep the ids before the first <s>, "
                    "decode them, drop a leading 'A:'")


@torch.no_grad()
def _variants(lm: PreTrainedModel, tok: PreTrainedTokenizerBase, context: str,
              answer: str) -> dict[str, float]:
    """What typical mistakes compute, to recognise them."""
    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    def token_logps(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        lp = lm(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        t = torch.tensor(ids)
        return lp[:-1].gather(1, t[1:, None])[:, 0], lp.gather(1, t[:, None])[:, 0]

    c, a = [tok.bos_token_id, *enc(context)], enc(" " + answer)
    n = len(a)
    shifted, unshifted = token_logps(c + a)
    no_space = enc(answer)
    return {"no shift": unshifted[-n:].sum().item(),
            "context too": shifted.sum().item(),
            "mean": shifted[-n:].mean().item(),
            "probability": math.exp(shifted[-n:].sum().item()),
            "no bos": token_logps(enc(context) + a)[0][-n:].sum().item(),
            "no space": token_logps(c + no_space)[0][-len(no_space):].sum().item()}


def _diagnose_answer_logprob(fn: Callable) -> None:
    lm, tok = _base()
    cases = [("The capital of Zorvia is", "Mell"), ("3 plus 4 is", "7."),
             ("The capital of Zorvia is", "Mell. Many people visit Mell")]
    for context, answer in cases:
        got = fn(lm, tok, context, answer)
        got = float(got.item() if isinstance(got, torch.Tensor) else got)
        want = sol.answer_logprob(lm, tok, context, answer)
        if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-4):
            continue
        v = _variants(lm, tok, context, answer)
        near = {k: math.isclose(got, x, rel_tol=1e-4, abs_tol=1e-4) for k, x in v.items()}
        if got > 0 and not near["probability"]:
            raise Wrong(f"a log-probability is at most 0, got {got:.3f}")
        if near["no shift"]:
            raise Wrong("off by one token: the logits at position t predict the token at "
                        "t + 1, so the answer's first token is scored by the context's last "
                        "position")
        if near["context too"]:
            raise Wrong("you summed over the context's tokens too: the probe scores the "
                        "answer given the context, log p(answer | context)")
        if near["mean"]:
            raise Wrong("you averaged over the answer's tokens: the log-probability of the "
                        "whole answer is their sum")
        if near["probability"]:
            raise Wrong("you returned a probability: return its log, the sum of the tokens' "
                        "log-probs")
        if near["no bos"]:
            raise Wrong("the document must start with <s>, as every pretraining document did")
        if near["no space"]:
            raise Wrong("tokenize the answer with its leading space, ' ' + answer: in the "
                        "running text it follows a space, and BPE tokens carry it")
        raise Wrong(f"log p({answer!r} | {context!r}) = {want:.4f}, you got {got:.4f}: check "
                    "<s>, the shift and which tokens are summed")


first_document = Exercise("first_document", _diagnose_first_document, sol.first_document,
                          "correct: the first document's answer, without the forum's 'A:'.")
answer_logprob = Exercise("answer_logprob", _diagnose_answer_logprob, sol.answer_logprob,
                          "correct: the answer's tokens, each scored by the position before it.")
