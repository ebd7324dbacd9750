"""Each preference loss equals its formula; rewards are beta * log-ratios; bad options raise."""

import math

import pytest
import torch
import torch.nn.functional as F

from dpolab import losses


@pytest.fixture
def logps():
    g = torch.Generator().manual_seed(0)
    return [-20 * torch.rand(16, generator=g, dtype=torch.float64) for _ in range(4)]


def test_dpo_loss_is_minus_log_sigmoid_of_beta_times_margin(logps):
    c, r, rc, rr = logps
    beta = 0.3
    h = (c - rc) - (r - rr)
    expected = torch.log1p(torch.exp(-beta * h))  # -log sigmoid(x) = log(1 + e^-x)
    torch.testing.assert_close(losses.dpo_loss(c, r, rc, rr, beta), expected)


def test_conservative_dpo_mixes_both_labels(logps):
    c, r, rc, rr = logps
    beta, eps = 0.5, 0.2
    h = (c - rc) - (r - rr)
    expected = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    torch.testing.assert_close(losses.dpo_loss(c, r, rc, rr, beta, label_smoothing=eps), expected)
    # eps = 0.5 would make every label a coin flip: no signal, refused.
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.dpo_loss(c, r, rc, rr, beta, label_smoothing=0.5)


def test_ipo_loss_regresses_the_margin_to_one_over_two_beta(logps):
    c, r, rc, rr = logps
    beta = 0.25
    h = (c - rc) - (r - rr)
    torch.testing.assert_close(losses.ipo_loss(c, r, rc, rr, beta), (h - 2.0) ** 2)
    # Zero exactly at the target margin 1 / (2 beta).
    zero = losses.ipo_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                           torch.tensor([0.0]), beta)
    assert zero.item() == 0.0


def test_hinge_loss_is_zero_past_margin_one_over_beta(logps):
    c, r, rc, rr = logps
    beta = 0.1
    h = (c - rc) - (r - rr)
    expected = torch.clamp(1 - beta * h, min=0)
    torch.testing.assert_close(losses.hinge_loss(c, r, rc, rr, beta), expected)
    z = torch.zeros(1)
    assert losses.hinge_loss(z + 10.5, z, z, z, beta).item() == 0.0
    assert losses.hinge_loss(z + 9.0, z, z, z, beta).item() == pytest.approx(0.1)


def test_at_policy_equal_reference_the_dpo_loss_is_ln2(logps):
    c, r, _, _ = logps
    assert torch.allclose(losses.dpo_loss(c, r, c, r, 0.1), torch.full_like(c, math.log(2)))


def test_preference_loss_dispatches_and_returns_implicit_rewards(logps):
    c, r, rc, rr = logps
    for name, fn in losses.LOSSES.items():
        out, chosen_rewards, rejected_rewards = losses.preference_loss(c, r, rc, rr, 0.2, name)
        torch.testing.assert_close(out, fn(c, r, rc, rr, 0.2))
        torch.testing.assert_close(chosen_rewards, 0.2 * (c - rc))
        torch.testing.assert_close(rejected_rewards, 0.2 * (r - rr))
    with pytest.raises(ValueError, match="unknown loss_type 'simpo'"):
        losses.preference_loss(c, r, rc, rr, 0.2, "simpo")


def test_larger_beta_means_a_smaller_target_margin():
    """beta means the same in every loss: larger keeps the policy closer to the reference,
    so the margin at which each loss stops pushing shrinks as beta grows."""
    z = torch.zeros(1)
    for beta in (0.1, 0.5):
        h_ipo = 1 / (2 * beta)  # the IPO optimum
        assert losses.ipo_loss(z + h_ipo, z, z, z, beta).item() == pytest.approx(0.0)
        h_hinge = 1 / beta  # the hinge switches off
        assert losses.hinge_loss(z + h_hinge, z, z, z, beta).item() == pytest.approx(0.0)
