"""Checks of notebook 04 (PPO): GAE and the clipped policy loss.

Each check runs the learner's function on a small batch of two responses of different
lengths, whose padding holds junk (as a real rollout's may), and compares it with the
worked solution and with what each typical mistake would give.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..solutions import nb04 as sol
from . import Exercise, Wrong, close

__all__ = ["gae", "policy_loss"]


# --- GAE ----------------------------------------------------------------------------------

def _gae_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rewards, values and mask (2, 5): row 0 is four tokens long, row 1 three; the padding
    holds rewards and values that must not count."""
    rewards = torch.tensor([[0.1, -0.2, 0.05, 1.5, 7.0], [-0.1, 0.3, -0.8, 4.0, -3.0]])
    values = torch.tensor([[0.4, 0.9, -0.3, 0.7, 5.0], [0.2, -0.6, 0.5, 6.0, 2.0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    return rewards, values, mask


def _backward(delta: torch.Tensor, decay: float) -> torch.Tensor:
    """``A_t = delta_t + decay * A_{t+1}``, from the last column back."""
    out, nxt = torch.zeros_like(delta), torch.zeros_like(delta[:, 0])
    for t in reversed(range(delta.shape[1])):
        nxt = delta[:, t] + decay * nxt
        out[:, t] = nxt
    return out


def _forward(delta: torch.Tensor, decay: float) -> torch.Tensor:
    """``A_t = delta_t + decay * A_{t-1}``: the recursion run the wrong way."""
    out, prev = torch.zeros_like(delta), torch.zeros_like(delta[:, 0])
    for t in range(delta.shape[1]):
        prev = delta[:, t] + decay * prev
        out[:, t] = prev
    return out


def _deltas(r: torch.Tensor, v: torch.Tensor, gamma: float, bootstrap: bool = True,
            ) -> torch.Tensor:
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1)
    return r + (gamma * next_v if bootstrap else 0) - v


def _gae_mistakes(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                  lam: float) -> list[tuple[torch.Tensor, str]]:
    """The advantages each typical mistake gives, with its diagnosis."""
    r, v = rewards * mask, values * mask
    unmasked = _backward(_deltas(rewards, values, gamma), gamma * lam)
    return [
        (_backward(_deltas(r, v, gamma, bootstrap=False), gamma * lam) * mask,
         "your TD error has no bootstrap: delta_t = r_t + gamma * V_{t+1} - V_t needs the "
         "next state's value V_{t+1} (0 after the last token)"),
        (_forward(_deltas(r, v, gamma), gamma * lam) * mask,
         "your recursion runs forwards: A_t depends on A_{t+1}, the future, so iterate from "
         "the last token back to the first"),
        (_backward(_deltas(r, v, gamma), gamma) * mask,
         "lambda is missing: the advantages decay by gamma * lambda per step, "
         "A_t = delta_t + gamma * lam * A_{t+1}"),
        (_backward(_deltas(r, v, 1.0), gamma * lam) * mask,
         "gamma is missing from the TD error: delta_t = r_t + gamma * V_{t+1} - V_t"),
        (_backward(_deltas(r, v, 1.0), lam) * mask,
         "gamma is missing: it discounts both the next value in delta_t and the next "
         "advantage, A_t = delta_t + gamma * lam * A_{t+1}"),
        (_backward(_deltas(r, v, gamma), lam) * mask,
         "gamma is missing from the recursion: A_t = delta_t + gamma * lam * A_{t+1}"),
    ] + [(leaked, "the padding leaks in: the last response token must bootstrap from 0, "
                  "not from the value (or reward) stored in the padded position after it; "
                  "multiply rewards and values by the mask first")
         for leaked in (unmasked * mask, unmasked)]


def _as_pair(out: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(out, tuple | list) and len(out) == 2
            and all(torch.is_tensor(x) for x in out)):
        raise Wrong("return a pair of tensors (advantages, returns), each (B, R)")
    return out[0], out[1]


def _diagnose_gae(fn: Callable) -> None:
    rewards, values, mask = _gae_inputs()
    for gamma, lam in ((0.9, 0.8), (1.0, 0.95)):
        adv, ret = _as_pair(fn(rewards.clone(), values.clone(), mask.clone(), gamma, lam))
        want_adv, want_ret = sol.gae(rewards, values, mask, gamma, lam)
        if adv.shape != want_adv.shape or ret.shape != want_ret.shape:
            raise Wrong(f"advantages and returns should both have the shape of the rewards, "
                        f"{tuple(want_adv.shape)}; got {tuple(adv.shape)} and "
                        f"{tuple(ret.shape)}")
        if not close(adv, want_adv):
            if close(adv.abs().sum(), 0):
                raise Wrong("your advantages are all 0")
            for wrong, message in _gae_mistakes(rewards, values, mask, gamma, lam):
                if close(adv, wrong):
                    raise Wrong(message)
            m = mask.bool()
            if close(adv[m].mean(), 0, atol=1e-4) and close(adv[m].std(unbiased=False), 1):
                raise Wrong("your advantages are whitened: return them raw; PPO whitens "
                            "them after the returns are computed")
            raise Wrong(f"your advantages differ from GAE's (gamma={gamma}, lam={lam}): check "
                        f"delta_t = r_t + gamma * V_(t+1) - V_t with V = 0 after the last "
                        f"token, and A_t = delta_t + gamma * lam * A_(t+1)")
        v = values * mask
        if not close(ret, want_ret):
            rtg = _backward(rewards * mask, gamma) * mask
            if close(ret, adv):
                raise Wrong("your returns are the advantages: returns = advantages + values")
            if close(ret, rtg):
                raise Wrong("your returns are the discounted sums of rewards; PPO's value "
                            "target is the lambda-return, returns = advantages + values")
            if close(ret, adv + values):
                raise Wrong("your returns are not 0 on padded positions: use the masked "
                            "values, or multiply by the mask")
            if close(ret, adv - v):
                raise Wrong("your returns subtract the values: returns = advantages + values")
            raise Wrong("your advantages are right but your returns are not: returns = "
                        "advantages + values, 0 where masked")


gae = Exercise("GAE", _diagnose_gae, sol.gae,
               "correct: advantages and returns match GAE, with the padding handled.")


# --- the clipped policy loss ---------------------------------------------------------------

def _loss_inputs() -> tuple[torch.Tensor, ...]:
    """Log-probs, old log-probs, advantages and mask (2, 4): ratios inside and on both
    sides of the clip, advantages of both signs, and junk in the padding."""
    ratio = torch.tensor([[1.5, 0.6, 1.1, 0.7], [0.5, 1.35, 0.95, 2.0]])
    old = torch.tensor([[-1.2, -0.4, -2.0, -0.9], [-0.7, -1.6, -0.3, -1.1]])
    adv = torch.tensor([[2.0, 0.8, -1.5, -0.6], [-2.0, -1.0, 0.7, 3.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]])
    return old + ratio.log(), old, adv, mask


def _loss_mistakes(logps: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                   eps: float) -> list[tuple[torch.Tensor, str]]:
    ratio = torch.exp(logps - old)
    clip = torch.clamp(ratio, 1 - eps, 1 + eps)

    def mmean(x: torch.Tensor) -> torch.Tensor:
        return (x * mask).sum() / mask.sum()

    def pessimistic(r: torch.Tensor) -> torch.Tensor:
        return mmean(torch.max(-adv * r, -adv * torch.clamp(r, 1 - eps, 1 + eps)))

    per_token = torch.max(-adv * ratio, -adv * clip)
    clipped_adv = adv.clamp(1 - eps, 1 + eps)
    return [
        (mmean(torch.min(-adv * ratio, -adv * clip)),
         "you take the min of the negated terms (or the max of the objective's): PPO is "
         "pessimistic, the loss is max(-A * ratio, -A * clip(ratio)), minus the min of "
         "the two objectives"),
        (-pessimistic(ratio),
         "the sign is flipped: this is the objective to maximise; the loss to minimise is "
         "its negative, max(-A * ratio, -A * clip(ratio))"),
        (mmean(torch.max(-adv * ratio, -clipped_adv * ratio)),
         "you clip the advantage: clip the ratio to [1 - eps, 1 + eps], not A"),
        (mmean(-clipped_adv * ratio),
         "you clip the advantage: clip the ratio to [1 - eps, 1 + eps], not A"),
        (mmean(-adv * clip),
         "you only use the clipped term: the loss is the max of the unclipped and the "
         "clipped terms"),
        (mmean(-adv * ratio),
         "there is no clipping: the loss is max(-A * ratio, -A * clip(ratio, 1 - eps, "
         "1 + eps))"),
        (pessimistic(logps / old),
         "your ratio divides the log-probs: the ratio of probabilities is "
         "exp(logps - old_logps)"),
        (pessimistic(logps - old),
         "your ratio is the log-ratio: take exp(logps - old_logps)"),
        (pessimistic(torch.exp(old - logps)),
         "your ratio is upside down: ratio = pi / pi_old = exp(logps - old_logps)"),
        (per_token.mean(),
         "you average over every position, padding included: take the mean over response "
         "tokens only, (loss * mask).sum() / mask.sum()"),
        ((per_token * mask).mean(),
         "you divide by every position, padding included: divide by mask.sum(), the number "
         "of response tokens"),
        (((per_token * mask).sum(1) / mask.sum(1)).mean(),
         "you average per response, then over responses: PPO here takes one mean over "
         "all response tokens of the batch, (loss * mask).sum() / mask.sum()"),
        ((per_token * mask).sum(),
         "you sum over tokens: take the mean over response tokens, divide by mask.sum()"),
    ]


def _diagnose_policy_loss(fn: Callable) -> None:
    logps, old, adv, mask = _loss_inputs()
    for eps in (0.2, 0.3):
        x = logps.clone().requires_grad_(True)
        loss = fn(x, old.clone(), adv.clone(), mask.clone(), eps)
        if isinstance(loss, tuple | list):
            raise Wrong("return the loss alone, a 0-dimensional tensor (not a tuple)")
        if not torch.is_tensor(loss) or loss.dim() != 0:
            raise Wrong("return the loss as a 0-dimensional tensor (one number for the batch)")
        want = sol.policy_loss(logps, old, adv, mask, eps)
        if not close(loss, want):
            for wrong, message in _loss_mistakes(logps, old, adv, mask, eps):
                if close(loss, wrong):
                    raise Wrong(message)
            raise Wrong(f"your loss differs from PPO-clip's (eps={eps}): per token "
                        f"max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)) with "
                        f"ratio = exp(logps - old_logps), then the mean over response tokens")
        if not loss.requires_grad:
            raise Wrong("your loss does not depend on logps through autograd (.item(), "
                        ".detach() or numpy?): no gradient would reach the policy")
        (grad,) = torch.autograd.grad(loss, x)
        x2 = logps.clone().requires_grad_(True)
        (want_grad,) = torch.autograd.grad(sol.policy_loss(x2, old, adv, mask, eps), x2)
        if not close(grad, want_grad):
            raise Wrong("your loss has the right value but the wrong gradient: the clipped "
                        "term must be clamp(ratio, ...) of the ratio that depends on logps")


policy_loss = Exercise("clipped policy loss", _diagnose_policy_loss, sol.policy_loss,
                       "correct: the PPO-clip loss matches, value and gradient.")
