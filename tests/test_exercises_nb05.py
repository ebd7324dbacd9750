"""Notebook 05's checks accept the worked solutions, say "not done" for the stubs and name
the typical mistakes."""

import torch
import torch.nn.functional as F

from dpolab.exercises import nb05 as ex
from dpolab.solutions import nb05 as sol


def message(exercise, fn):
    v = exercise.verdict(fn)
    assert v.status == "wrong", v
    return v.message


def test_optimal_policy_mistakes():
    def unnormalised(r, ref, beta):
        return ref * torch.exp(r / beta)

    def times_beta(r, ref, beta):
        return torch.softmax(ref.log() + r * beta, -1)

    def no_reference(r, ref, beta):
        return torch.softmax(r / beta, -1)

    def minus(r, ref, beta):
        return torch.softmax(ref.log() - r / beta, -1)

    def plain_but_correct(r, ref, beta):  # the direct formula, in float64: right
        w = ref * torch.exp(r / beta)
        return w / w.sum()

    assert "partition function" in message(ex.optimal_policy, unnormalised)
    assert "beta multiplies" in message(ex.optimal_policy, times_beta)
    assert "ignores pi_ref" in message(ex.optimal_policy, no_reference)
    assert "+r / beta" in message(ex.optimal_policy, minus)
    assert ex.optimal_policy.verdict(plain_but_correct).correct


def test_dpo_loss_mistakes():
    def margin(lc, lr, rc, rr):
        return (lc - rc) - (lr - rr)

    def flipped(lc, lr, rc, rr, beta):
        return -F.logsigmoid(-beta * margin(lc, lr, rc, rr))

    def no_reference(lc, lr, rc, rr, beta):
        return -F.logsigmoid(beta * (lc - lr))

    def no_beta(lc, lr, rc, rr, beta):
        return -F.logsigmoid(margin(lc, lr, rc, rr))

    def averaged(lc, lr, rc, rr, beta):
        return sol.dpo_loss(lc, lr, rc, rr, beta).mean()

    def unstable(lc, lr, rc, rr, beta):
        return -torch.log(torch.sigmoid(beta * margin(lc, lr, rc, rr)))

    assert "sign of the margin is flipped" in message(ex.dpo_loss, flipped)
    assert "ln 2" in message(ex.dpo_loss, no_reference)
    assert "beta is missing" in message(ex.dpo_loss, no_beta)
    assert "one loss per pair" in message(ex.dpo_loss, averaged)
    assert "F.logsigmoid" in message(ex.dpo_loss, unstable)


def test_gradient_weight_mistakes():
    assert "already orders right" in message(ex.gradient_weight,
                                             lambda h, beta: torch.sigmoid(beta * h))
    assert "slope of the loss" in message(ex.gradient_weight,
                                          lambda h, beta: -beta * torch.sigmoid(-beta * h))
    assert "without the factor beta" in message(ex.gradient_weight,
                                                lambda h, beta: beta * torch.sigmoid(-beta * h))
    assert "beta is missing" in message(ex.gradient_weight, lambda h, beta: torch.sigmoid(-h))


def test_checks_leave_the_random_state_alone():
    torch.manual_seed(0)
    ex.optimal_policy.verdict(sol.optimal_policy)
    ex.dpo_loss.verdict(sol.dpo_loss)
    ex.gradient_weight.verdict(sol.gradient_weight)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))
