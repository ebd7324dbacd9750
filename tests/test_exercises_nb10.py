"""Notebook 10's checks accept the worked solutions, say "not done" for stubs and name the
typical mistakes."""

import pytest
import torch
import torch.nn.functional as F

from dpolab import variants
from dpolab.exercises import nb10 as ex
from dpolab.solutions import nb10 as sol


def stub(*args):
    raise NotImplementedError("your code here")


def returns_none(*args):
    return None


def margin(lc, lr, rc, rr):
    return (lc - rc) - (lr - rr)


@pytest.mark.parametrize("exercise", [ex.dpop_loss, ex.robust_dpo])
def test_solution_correct_and_stubs_not_done(exercise):
    assert exercise.verdict(exercise.solution).correct
    for fn in (stub, returns_none):
        v = exercise.verdict(fn)
        assert v.status == "not done" and "dpolab/solutions/nb10.py" in v.message


def test_robust_solution_is_the_package_loss_and_unbiased():
    lc, lr, rc, rr = ex.pairs()
    assert torch.allclose(sol.robust_dpo(lc, lr, rc, rr, 0.5, 0.2),
                          variants.robust_dpo_loss(lc, lr, rc, rr, 0.5, label_smoothing=0.2))
    expected = 0.8 * sol.robust_dpo(lc, lr, rc, rr, 0.5, 0.2) + 0.2 * sol.robust_dpo(
        lr, lc, rr, rc, 0.5, 0.2)
    assert torch.allclose(expected, -F.logsigmoid(0.5 * margin(lc, lr, rc, rr)), atol=1e-6)


def test_dpop_is_dpo_while_the_chosen_response_gains():
    lc, lr, rc, rr = ex.pairs()
    up = lc >= rc
    assert torch.allclose(sol.dpop_loss(lc, lr, rc, rr, 0.5, 3.0)[up],
                          variants.dpo_loss(lc, lr, rc, rr, 0.5)[up])
    assert (sol.dpop_loss(lc, lr, rc, rr, 0.5, 3.0)[~up]
            > variants.dpo_loss(lc, lr, rc, rr, 0.5)[~up]).all()


def dpop_with(penalty, inside_beta=True, outside=False):
    def fn(lc, lr, rc, rr, beta, lam):
        h, p = margin(lc, lr, rc, rr), penalty(lc, rc)
        if outside:
            return -F.logsigmoid(beta * h) + lam * p
        return -F.logsigmoid(beta * (h - lam * p) if inside_beta else beta * h - lam * p)
    return fn


@pytest.mark.parametrize("wrong, says", [
    (lambda lc, lr, rc, rr, beta, lam: variants.dpo_loss(lc, lr, rc, rr, beta), "plain DPO"),
    (dpop_with(lambda lc, rc: (lc - rc).clamp(min=0)), "sign is flipped"),
    (dpop_with(lambda lc, rc: rc - lc), "without max(0, ·)"),
    (dpop_with(lambda lc, rc: (rc - lc).clamp(min=0), inside_beta=False), "inside β"),
    (dpop_with(lambda lc, rc: (rc - lc).clamp(min=0), outside=True), "inside the sigmoid"),
    (lambda *a: sol.dpop_loss(*a).mean(), "one loss per pair"),
    (lambda lc, lr, rc, rr, beta, lam: sol.dpop_loss(lc, lr, rc, rr, beta, 2 * lam),
     "differs from DPO-Positive"),
])
def test_dpop_mistakes(wrong, says):
    v = ex.dpop_loss.verdict(wrong)
    assert v.status == "wrong" and says in v.message, v.message


def robust_like(weight_pos, weight_neg, denominator):
    def fn(lc, lr, rc, rr, beta, eps):
        h = margin(lc, lr, rc, rr)
        return (weight_pos(eps) * F.logsigmoid(beta * h)
                + weight_neg(eps) * F.logsigmoid(-beta * h)) / denominator(eps)
    return fn


@pytest.mark.parametrize("wrong, says", [
    (lambda lc, lr, rc, rr, beta, eps: variants.cdpo_loss(lc, lr, rc, rr, beta,
                                                          label_smoothing=eps), "that is cDPO"),
    (robust_like(lambda e: -(1 - e), lambda e: e, lambda e: 1.0), "1/(1 − 2ε) factor is missing"),
    (robust_like(lambda e: -(1 - e), lambda e: -e, lambda e: 1 - 2 * e), "plus sign"),
    (robust_like(lambda e: -e, lambda e: 1 - e, lambda e: 1 - 2 * e), "swapped"),
    (robust_like(lambda e: 1 - e, lambda e: -e, lambda e: 1 - 2 * e), "overall sign"),
    (lambda lc, lr, rc, rr, beta, eps: variants.dpo_loss(lc, lr, rc, rr, beta), "plain DPO"),
    (robust_like(lambda e: -(1 - e), lambda e: e, lambda e: 1 - 3 * e), "not unbiased"),
])
def test_robust_mistakes(wrong, says):
    v = ex.robust_dpo.verdict(wrong)
    assert v.status == "wrong" and says in v.message, v.message


def test_dpop_solution_matches_the_package_loss():
    if not hasattr(variants, "dpop_loss"):
        pytest.skip("dpolab.variants has no dpop_loss")
    lc, lr, rc, rr = ex.pairs()
    assert torch.allclose(sol.dpop_loss(lc, lr, rc, rr, 0.4, 3.0),
                          variants.dpop_loss(lc, lr, rc, rr, 0.4, lam=3.0))
