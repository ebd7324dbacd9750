"""Checks of notebook 05, the math of DPO: the closed-form optimum, the DPO loss and its
gradient weight. Each compares the learner's function with the worked solution
(``dpolab.solutions.nb05``) and, where they differ, with the usual mistakes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dpolab import bandit
from dpolab.exercises import Exercise, Wrong, close
from dpolab.solutions import nb05 as solutions

__all__ = ["dpo_loss", "gradient_weight", "optimal_policy"]

BETAS = (0.5, 2.0, 1.0)  # not 1 first: at beta = 1, "times beta" and "over beta" agree


def _as64(x: object) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).detach()


def _first_mismatch(got: torch.Tensor, want: torch.Tensor) -> str:
    i = int((got - want).abs().argmax())
    return f"entry {i}: got {float(got.flatten()[i]):.4g}, expected {float(want.flatten()[i]):.4g}"


def _bandits() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The lesson's bandit and a random one (so no answer can be typed in)."""
    b = bandit.example()
    g = torch.Generator().manual_seed(5)
    rewards = 4 * torch.rand(5, generator=g, dtype=torch.float64) - 2
    pi_ref = torch.softmax(torch.randn(5, generator=g, dtype=torch.float64), -1)
    return [(b.rewards, b.pi_ref), (rewards, pi_ref)]


def _diagnose_optimal_policy(fn: Callable) -> None:
    for rewards, pi_ref in _bandits():
        for beta in BETAS:
            got = _as64(fn(rewards.clone(), pi_ref.clone(), beta))
            want = solutions.optimal_policy(rewards, pi_ref, beta)
            if close(got, want):
                continue
            if got.shape != want.shape:
                raise Wrong(f"expected one probability per response, shape {tuple(want.shape)}; "
                            f"got shape {tuple(got.shape)}")
            if not torch.isfinite(got).all():
                raise Wrong(f"your policy has inf or NaN at beta = {beta}: exp(r / beta) can "
                            "overflow; normalise in log space (torch.softmax, torch.logsumexp)")
            log_ref = torch.log(pi_ref)
            if close(got, pi_ref * torch.exp(rewards / beta)):
                raise Wrong(f"your pi* sums to {float(got.sum()):.3f}, not 1: you forgot to "
                            "divide by the partition function Z = sum_y pi_ref(y) exp(r(y)/beta)")
            if close(got, torch.softmax(log_ref + rewards * beta, -1)):
                raise Wrong("beta multiplies the reward in your pi*; it divides it: "
                            "exp(r / beta), so that a larger beta keeps pi* closer to pi_ref")
            if close(got, torch.softmax(rewards / beta, -1)):
                raise Wrong("your pi* ignores pi_ref: softmax(r / beta) is the optimum for a "
                            "uniform reference. The optimum reweights the reference: "
                            "pi_ref(y) exp(r(y) / beta) / Z")
            if close(got, torch.softmax(log_ref - rewards / beta, -1)):
                raise Wrong("your pi* favours the low rewards: the exponent is +r / beta")
            if abs(float(got.sum()) - 1) > 1e-6:
                raise Wrong(f"your pi* sums to {float(got.sum()):.3f} at beta = {beta}: a "
                            "policy must sum to 1 (divide by Z)")
            raise Wrong(f"your pi* differs from pi_ref exp(r / beta) / Z at beta = {beta} "
                        f"({_first_mismatch(got, want)})")


def _logps(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [-50 * torch.rand(n, generator=g, dtype=torch.float64) for _ in range(4)]


def _diagnose_dpo_loss(fn: Callable) -> None:
    n = 64
    inputs = _logps(n, seed=0)
    lc, lr, rc, rr = inputs
    h = (lc - rc) - (lr - rr)
    for beta in (0.1, 0.5, 2.0):
        got = _as64(fn(*(x.clone() for x in inputs), beta))
        want = solutions.dpo_loss(*inputs, beta)
        if close(got, want):
            continue
        if got.shape != want.shape:
            raise Wrong(f"expected one loss per pair, shape ({n},); got shape "
                        f"{tuple(got.shape)} (don't average here: the trainer does)")
        mistakes = [
            (-F.logsigmoid(-beta * h), "the sign of the margin is flipped: your loss falls when "
             "the rejected response gains. h = chosen log-ratio - rejected log-ratio, and the "
             "loss is -log sigmoid(+beta h)"),
            (F.logsigmoid(beta * h), "your loss is the log-likelihood itself (negative); the "
             "loss is its negative, -log sigmoid(beta h)"),
            (-F.logsigmoid(beta * (lc - lr)), "the reference is missing from the margin: with "
             "the policy equal to the reference the loss must be ln 2 = 0.693 for every pair. "
             "Use log-ratios, log pi - log pi_ref"),
            (-F.logsigmoid(beta * ((lc + rc) - (lr + rr))), "you added the reference "
             "log-probs; the margin uses log-ratios, policy minus reference"),
            (-F.logsigmoid(h), "beta is missing: the loss is -log sigmoid(beta h)"),
            (-F.logsigmoid(h / beta), "beta divides the margin in your loss; it multiplies "
             "it: -log sigmoid(beta h)"),
        ]
        for wrong, why in mistakes:
            if close(got, wrong):
                raise Wrong(why)
        at_ref = _as64(fn(lc.clone(), lr.clone(), lc.clone(), lr.clone(), beta))
        if not close(at_ref, torch.full_like(lc, math.log(2))):
            raise Wrong("with the policy equal to the reference (h = 0) your loss is not "
                        f"ln 2 = 0.693 (got {float(at_ref.flatten()[0]):.4g}): check the margin")
        raise Wrong(f"your loss differs from -log sigmoid(beta h) at beta = {beta} "
                    f"({_first_mismatch(got, want)})")
    # Margins of a thousand nats: log(sigmoid(x)) underflows to -inf there.
    zero, far = torch.zeros(2, dtype=torch.float64), torch.tensor([-2000.0, 2000.0],
                                                                   dtype=torch.float64)
    got = _as64(fn(zero.clone(), far.clone(), zero.clone(), zero.clone(), 1.0))
    if not torch.isfinite(got).all():
        raise Wrong("your loss is inf or NaN at large margins: log(sigmoid(x)) underflows; "
                    "F.logsigmoid computes it stably")
    if not close(got, solutions.dpo_loss(zero, far, zero, zero, 1.0)):
        raise Wrong("your loss is wrong at large margins (|h| = 2000): use F.logsigmoid")


def _diagnose_gradient_weight(fn: Callable) -> None:
    h = torch.linspace(-10, 10, 41, dtype=torch.float64)
    for beta in (0.5, 2.0, 0.1):
        got = _as64(fn(h.clone(), beta))
        want = solutions.gradient_weight(h, beta)
        if close(got, want):
            continue
        if got.shape != want.shape:
            raise Wrong(f"expected one weight per margin, shape {tuple(want.shape)}; got shape "
                        f"{tuple(got.shape)}")
        mistakes = [
            (torch.sigmoid(beta * h), "your weight is largest for pairs the policy already "
             "orders right (h > 0); the gradient pushes hardest where the margin is wrong: "
             "sigmoid(-beta h)"),
            (beta * torch.sigmoid(-beta * h), "that is minus the slope of the loss, "
             "-dL/dh = beta sigmoid(-beta h); the weight is that without the factor beta"),
            (-beta * torch.sigmoid(-beta * h), "that is the slope of the loss, dL/dh; the "
             "weight is sigmoid(-beta h), without the factor -beta"),
            (torch.sigmoid(-h), "beta is missing: the weight is sigmoid(-beta h)"),
            (torch.sigmoid(-h / beta), "beta divides the margin in your weight; it "
             "multiplies it: sigmoid(-beta h)"),
            (-F.logsigmoid(beta * h), "that is the loss -log sigmoid(beta h), not its "
             "gradient weight"),
        ]
        for wrong, why in mistakes:
            if close(got, wrong):
                raise Wrong(why)
        if (got < 0).any() or (got > 1).any():
            raise Wrong("a weight outside [0, 1]: the weight is a sigmoid, between 0 and 1")
        raise Wrong(f"your weight differs from sigmoid(-beta h) at beta = {beta} "
                    f"({_first_mismatch(got, want)})")


optimal_policy = Exercise("the optimal policy pi*", _diagnose_optimal_policy,
                          solutions.optimal_policy)
dpo_loss = Exercise("the DPO loss", _diagnose_dpo_loss, solutions.dpo_loss)
gradient_weight = Exercise("the gradient weight", _diagnose_gradient_weight,
                           solutions.gradient_weight)
