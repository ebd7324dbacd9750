"""Notebook 04's checks: each accepts its worked solution, says "not done" for the stub, and
names the typical mistakes."""

import pytest
import torch

from dpolab import ppo
from dpolab.exercises import nb04 as ex
from dpolab.solutions import nb04 as sol


def _none(*args, **kwargs):
    return None


def test_checks_accept_the_package_functions():
    assert ex.gae.verdict(ppo.gae).correct
    assert ex.policy_loss.verdict(lambda *a: ppo.policy_loss(*a)[0]).correct


def test_checks_do_not_move_the_random_state():
    torch.manual_seed(0)
    ex.gae(sol.gae)
    ex.policy_loss(sol.policy_loss)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)


# --- GAE: typical mistakes -------------------------------------------------------------------

def _gae_loop(rewards, values, mask, gamma, lam, *, bootstrap=True, backwards=True,
              use_lam=True, gamma_in_delta=True, mask_inputs=True, returns="a+v"):
    """GAE with one mistake switched on at a time."""
    r, v = (rewards * mask, values * mask) if mask_inputs else (rewards, values)
    B, R = r.shape
    adv = torch.zeros_like(r)
    carry = torch.zeros(B)
    steps = reversed(range(R)) if backwards else range(R)
    for t in steps:
        next_v = v[:, t + 1] if t + 1 < R else torch.zeros(B)
        delta = r[:, t] + ((gamma if gamma_in_delta else 1.0) * next_v if bootstrap else 0) \
            - v[:, t]
        carry = delta + gamma * (lam if use_lam else 1.0) * carry
        adv[:, t] = carry
    adv = adv * mask
    if returns == "a+v":
        ret = (adv + v) * mask
    elif returns == "a":
        ret = adv
    else:  # discounted rewards-to-go
        ret = torch.zeros_like(r)
        carry = torch.zeros(B)
        for t in reversed(range(R)):
            carry = r[:, t] + gamma * carry
            ret[:, t] = carry
        ret = ret * mask
    return adv, ret


@pytest.mark.parametrize("mistake, message", [
    ({"bootstrap": False}, "no bootstrap"),
    ({"backwards": False}, "runs forwards"),
    ({"use_lam": False}, "lambda is missing"),
    ({"gamma_in_delta": False}, "gamma is missing from the TD error"),
    ({"mask_inputs": False}, "the padding leaks in"),
    ({"returns": "a"}, "your returns are the advantages"),
    ({"returns": "rtg"}, "discounted sums of rewards"),
])
def test_gae_check_names_the_mistake(mistake, message):
    assert ex.gae.verdict(lambda *a: _gae_loop(*a)).correct  # the harness itself is right
    v = ex.gae.verdict(lambda *a: _gae_loop(*a, **mistake))
    assert v.status == "wrong" and message in v.message, v.message


def test_gae_check_rejects_whitened_advantages_and_a_single_output():
    def whitened(rewards, values, mask, gamma, lam):
        adv, ret = sol.gae(rewards, values, mask, gamma, lam)
        return ppo.whiten(adv, mask), ret

    assert "whitened" in ex.gae.verdict(whitened).message
    assert "pair of tensors" in ex.gae.verdict(lambda *a: sol.gae(*a)[0]).message


# --- the clipped policy loss: typical mistakes ------------------------------------------------

def _mean(x, mask):
    return (x * mask).sum() / mask.sum()


def _min_not_max(logps, old, adv, mask, eps):
    ratio = torch.exp(logps - old)
    return _mean(torch.min(-adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)), mask)


def _objective_not_loss(logps, old, adv, mask, eps):
    ratio = torch.exp(logps - old)
    return _mean(torch.min(adv * ratio, adv * ratio.clamp(1 - eps, 1 + eps)), mask)


def _clips_the_advantage(logps, old, adv, mask, eps):
    ratio = torch.exp(logps - old)
    return _mean(torch.max(-adv * ratio, -adv.clamp(1 - eps, 1 + eps) * ratio), mask)


def _ratio_of_logps(logps, old, adv, mask, eps):
    ratio = logps / old
    return _mean(torch.max(-adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)), mask)


def _ratio_without_exp(logps, old, adv, mask, eps):
    ratio = logps - old
    return _mean(torch.max(-adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)), mask)


def _no_mask(logps, old, adv, mask, eps):
    ratio = torch.exp(logps - old)
    return torch.max(-adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)).mean()


def _no_clip(logps, old, adv, mask, eps):
    return _mean(-adv * torch.exp(logps - old), mask)


def _detached(logps, old, adv, mask, eps):
    return sol.policy_loss(logps.detach(), old, adv, mask, eps)


@pytest.mark.parametrize("wrong, message", [
    (_min_not_max, "min of the negated terms"),
    (_objective_not_loss, "the sign is flipped"),
    (_clips_the_advantage, "you clip the advantage"),
    (_ratio_of_logps, "divides the log-probs"),
    (_ratio_without_exp, "the log-ratio: take exp"),
    (_no_mask, "padding included"),
    (_no_clip, "there is no clipping"),
    (_detached, "no gradient would reach the policy"),
    (lambda *a: ppo.policy_loss(*a), "return the loss alone"),
])
def test_policy_loss_check_names_the_mistake(wrong, message):
    v = ex.policy_loss.verdict(wrong)
    assert v.status == "wrong" and message in v.message, v.message
