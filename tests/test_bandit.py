"""The bandit's exact optimum, its measures, sampled preferences, and DPO converging to it."""

import math

import pytest
import torch

from dpolab import bandit as bd
from dpolab import losses


@pytest.fixture(scope="module")
def b():
    return bd.example()


@pytest.fixture(scope="module")
def pairs(b):
    return bd.sample_pairs(b.rewards, b.pi_ref, 20_000, seed=0)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


# --- The optimum ----------------------------------------------------------------------


def test_optimum_on_a_hand_example():
    # pi_ref = (1/2, 1/2), r = (0, ln 3), beta = 1: pi* ∝ (1, 3).
    torch.testing.assert_close(bd.optimal_policy(t(0, math.log(3)), t(0.5, 0.5), 1.0),
                               t(0.25, 0.75))


def test_optimum_is_normalised_and_matches_the_formula(b):
    for beta in (0.05, 0.5, 2.0, 50.0):
        pi = bd.optimal_policy(b.rewards, b.pi_ref, beta)
        assert float(pi.sum()) == pytest.approx(1.0, abs=1e-12)
        unnormalised = b.pi_ref * torch.exp(b.rewards / beta)
        torch.testing.assert_close(pi, unnormalised / unnormalised.sum())


def test_large_beta_gives_the_reference_small_beta_the_argmax(b):
    torch.testing.assert_close(bd.optimal_policy(b.rewards, b.pi_ref, 1e7), b.pi_ref,
                               atol=1e-6, rtol=0)
    argmax = torch.zeros_like(b.pi_ref)
    argmax[b.rewards.argmax()] = 1.0
    torch.testing.assert_close(bd.optimal_policy(b.rewards, b.pi_ref, 1e-3), argmax)


def test_optimum_beats_every_other_policy_on_the_objective(b):
    beta = 0.7
    best = bd.objective(bd.optimal_policy(b.rewards, b.pi_ref, beta), b.rewards, b.pi_ref, beta)
    others = torch.softmax(3 * torch.randn(500, 6, dtype=torch.float64,
                                           generator=torch.Generator().manual_seed(0)), -1)
    assert (bd.objective(others, b.rewards, b.pi_ref, beta) < best).all()
    # ... and its value is beta * log Z, the log-partition function.
    log_z = torch.logsumexp(torch.log(b.pi_ref) + b.rewards / beta, -1)
    assert float(best) == pytest.approx(beta * float(log_z), abs=1e-12)


def test_optimal_policy_takes_a_grid_of_betas(b):
    betas = t(0.1, 1.0, 10.0)
    rows = bd.optimal_policy(b.rewards, b.pi_ref, betas)
    assert rows.shape == (3, 6)
    for row, beta in zip(rows, betas.tolist(), strict=True):
        torch.testing.assert_close(row, bd.optimal_policy(b.rewards, b.pi_ref, beta))


def test_larger_beta_keeps_the_optimum_closer_to_the_reference(b):
    kls = bd.kl(bd.optimal_policy(b.rewards, b.pi_ref, torch.logspace(-1, 1, 9)), b.pi_ref)
    assert (kls[1:] < kls[:-1]).all()


# --- Measures -------------------------------------------------------------------------


def test_expected_reward_kl_and_tv_on_hand_examples():
    assert float(bd.expected_reward(t(0.25, 0.75), t(2.0, -1.0))) == pytest.approx(-0.25)
    assert float(bd.kl(t(0.5, 0.5), t(0.25, 0.75))) == pytest.approx(
        0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    assert float(bd.kl(t(0.2, 0.8), t(0.2, 0.8))) == 0.0
    assert float(bd.kl(t(0.0, 1.0), t(0.5, 0.5))) == pytest.approx(math.log(2))  # 0 log 0 = 0
    assert float(bd.total_variation(t(0.5, 0.5, 0.0), t(0.2, 0.5, 0.3))) == pytest.approx(0.3)


def test_bad_policies_and_betas_are_refused(b):
    with pytest.raises(ValueError, match="pi_ref must be non-negative and sum to 1"):
        bd.Bandit("q", ("a", "b"), t(0, 1), t(0.5, 0.6))
    with pytest.raises(ValueError, match=r"rewards must have shape \(2,\)"):
        bd.Bandit("q", ("a", "b"), t(0, 1, 2), t(0.5, 0.5))
    with pytest.raises(ValueError, match="beta must be a positive number"):
        bd.optimal_policy(b.rewards, b.pi_ref, 0.0)
    with pytest.raises(ValueError, match=r"chosen must hold response indices in \[0, 6\)"):
        bd.train_policy(torch.tensor([0, 6]), torch.tensor([1, 2]), b.pi_ref, 1.0, steps=1)


# --- Preferences ----------------------------------------------------------------------


def test_sampled_pairs_follow_bradley_terry(b, pairs):
    chosen, rejected = pairs
    assert len(chosen) == 20_000 and (chosen != rejected).all()
    a, c = 0, 3  # "12." (r = 2) against "13." (r = -1), the most often compared pair
    ac = ((chosen == a) & (rejected == c)).sum().item()
    ca = ((chosen == c) & (rejected == a)).sum().item()
    expected = float(bd.preference_probability(b.rewards[a], b.rewards[c]))  # sigmoid(3)
    n = ac + ca
    assert abs(ac / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    again = bd.sample_pairs(b.rewards, b.pi_ref, 20_000, seed=0)
    assert torch.equal(again[0], chosen) and torch.equal(again[1], rejected)


# --- Losses as functions of the margin --------------------------------------------------


def test_margin_loss_is_dpo_and_its_slope_is_minus_beta_times_the_weight():
    g = torch.Generator().manual_seed(1)
    c, r, rc, rr = (-10 * torch.rand(50, generator=g, dtype=torch.float64) for _ in range(4))
    beta = 0.4
    h = losses.margin(c, r, rc, rr).requires_grad_(True)
    loss = bd.margin_loss(h, beta)
    torch.testing.assert_close(loss, losses.dpo_loss(c, r, rc, rr, beta))
    (grad,) = torch.autograd.grad(loss.sum(), h)
    torch.testing.assert_close(grad, -beta * bd.gradient_weight(h.detach(), beta))
    assert float(bd.margin_loss(torch.zeros(1), beta)) == pytest.approx(math.log(2))
    assert float(bd.gradient_weight(torch.zeros(1), beta)) == 0.5


def test_reference_free_loss_is_dpo_with_a_uniform_reference():
    c, r = t(-1.0, -3.0), t(-2.0, -0.5)
    uniform = torch.full((2,), -math.log(6), dtype=torch.float64)
    torch.testing.assert_close(bd.reference_free_loss(c, r, 0.3),
                               losses.dpo_loss(c, r, uniform, uniform, 0.3))


# --- Training -------------------------------------------------------------------------


def test_dpo_converges_to_the_optimum(b, pairs):
    fit = bd.train_policy(*pairs, b.pi_ref, 1.0)
    pi_star = bd.optimal_policy(b.rewards, b.pi_ref, 1.0)
    assert float(bd.total_variation(fit.trajectory[0], b.pi_ref)) < 1e-12  # starts at pi_ref
    assert float(bd.total_variation(b.pi_ref, pi_star)) > 0.3
    assert float(bd.total_variation(fit.policy, pi_star)) < 0.02
    # The implicit reward beta * log(pi / pi_ref) recovers r up to a constant.
    implicit = losses.implicit_reward(fit.policy.log(), b.pi_ref.log(), 1.0)
    gap = (implicit - b.rewards) - (implicit - b.rewards).mean()
    assert gap.abs().max() < 0.1


def test_more_pairs_bring_dpo_closer_to_the_optimum(b):
    pi_star = bd.optimal_policy(b.rewards, b.pi_ref, 0.5)
    tv = [float(bd.total_variation(
        bd.train_policy(*bd.sample_pairs(b.rewards, b.pi_ref, n, seed=3), b.pi_ref, 0.5).policy,
        pi_star)) for n in (300, 300_000)]
    assert tv[1] < tv[0] / 4 and tv[1] < 0.01


def test_a_grid_of_betas_trains_as_independent_runs(b, pairs):
    betas = t(0.2, 1.0, 5.0)
    grid = bd.train_policy(*pairs, b.pi_ref, betas, steps=200)
    assert grid.policy.shape == (3, 6) and grid.trajectory.shape == (201, 3, 6)
    for row, beta in zip(grid.policy, betas.tolist(), strict=True):
        torch.testing.assert_close(row, bd.train_policy(*pairs, b.pi_ref, beta, steps=200).policy)


def test_the_dpo_solution_at_every_beta_shares_one_implicit_reward(b, pairs):
    # DPO's fit depends on beta only through beta * log(pi / pi_ref), so that is one
    # vector (the Bradley–Terry fit of r), whatever beta: pi_beta ∝ pi_ref exp(r_hat / beta).
    betas = t(0.3, 1.0, 3.0)
    fits = bd.train_policy(*pairs, b.pi_ref, betas).policy
    implicit = losses.implicit_reward(fits.log(), b.pi_ref.log(), betas[:, None])
    implicit = implicit - implicit.mean(-1, keepdim=True)
    torch.testing.assert_close(implicit, implicit[1].expand(3, -1), atol=1e-4, rtol=0)


def test_reference_free_loss_forgets_the_reference(b, pairs):
    beta = 3.0
    dpo = bd.train_policy(*pairs, b.pi_ref, beta)
    free = bd.train_policy(*pairs, b.pi_ref, beta, reference_free=True)
    # It converges to exp(r / beta) normalised: pi* for a uniform reference ...
    assert float(bd.total_variation(free.policy, torch.softmax(b.rewards / beta, -1))) < 0.02
    # ... so it drifts much further from pi_ref than DPO does.
    assert bd.kl(free.policy, b.pi_ref) > 2 * bd.kl(dpo.policy, b.pi_ref)
