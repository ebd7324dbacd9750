"""Notebook 01's checks accept the worked solutions and name the typical mistakes."""

import math

import torch

from dpolab.exercises import nb01 as ex
from dpolab.solutions import nb01 as sol


def test_keeping_the_next_documents_is_rejected():
    def whole(g, tok):
        return tok.decode(g.response_ids, skip_special_tokens=True).strip().removeprefix("A:")

    v = ex.first_document.verdict(whole)
    assert v.status == "wrong" and "you kept what follows the first <s>" in v.message


def test_forum_prefix_and_last_bos_are_rejected():
    def keeps_a(g, tok):
        ids = g.response_ids
        if tok.bos_token_id in ids:
            ids = ids[:ids.index(tok.bos_token_id)]
        return tok.decode(ids, skip_special_tokens=True).strip()

    def last_bos(g, tok):
        ids = g.response_ids
        if tok.bos_token_id in ids:
            ids = ids[:len(ids) - ids[::-1].index(tok.bos_token_id) - 1]
        return tok.decode(ids, skip_special_tokens=True).strip().removeprefix("A:").strip()

    assert "'A:' is still in front" in ex.first_document.verdict(keeps_a).message
    assert "you cut at the last <s>" in ex.first_document.verdict(last_bos).message


def _logps(lm, tok, context, answer, bos=True, space=True):
    c = ([tok.bos_token_id] if bos else []) + tok(context, add_special_tokens=False).input_ids
    a = tok((" " if space else "") + answer, add_special_tokens=False).input_ids
    with torch.no_grad():
        lp = lm(input_ids=torch.tensor([c + a])).logits[0].log_softmax(-1)
    return c, a, lp


def test_unshifted_probe_is_rejected():
    def unshifted(lm, tok, context, answer):
        c, a, lp = _logps(lm, tok, context, answer)
        return sum(lp[len(c) + i, t].item() for i, t in enumerate(a))

    v = ex.answer_logprob.verdict(unshifted)
    assert v.status == "wrong" and "off by one token" in v.message


def test_context_in_the_sum_and_mean_are_rejected():
    def with_context(lm, tok, context, answer):
        c, a, lp = _logps(lm, tok, context, answer)
        ids = c + a
        return sum(lp[t - 1, ids[t]].item() for t in range(1, len(ids)))

    def mean(lm, tok, context, answer):
        c, a, lp = _logps(lm, tok, context, answer)
        return sum(lp[len(c) - 1 + i, t].item() for i, t in enumerate(a)) / len(a)

    assert "summed over the context" in ex.answer_logprob.verdict(with_context).message
    assert "averaged over the answer" in ex.answer_logprob.verdict(mean).message


def test_probability_missing_bos_and_space_are_rejected():
    def prob(lm, tok, context, answer):
        return math.exp(sol.answer_logprob(lm, tok, context, answer))

    def scored(bos, space):
        def fn(lm, tok, context, answer):
            c, a, lp = _logps(lm, tok, context, answer, bos=bos, space=space)
            return sum(lp[len(c) - 1 + i, t].item() for i, t in enumerate(a))
        return fn

    assert "returned a probability" in ex.answer_logprob.verdict(prob).message
    assert "must start with <s>" in ex.answer_logprob.verdict(scored(False, True)).message
    assert "leading space" in ex.answer_logprob.verdict(scored(True, False)).message
