"""Worked solutions of notebook 04 (PPO).

- ``gae``: generalised advantage estimation over a batch of responses, backwards in time.
- ``policy_loss``: PPO's clipped surrogate as a loss to minimise, a mean over response tokens.
"""

from __future__ import annotations

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (both (B, R), 0 where ``mask`` is 0) of per-token ``rewards``
    and ``values`` (B, R); ``mask`` is 1 on each row's response, a prefix.

        delta_t = r_t + gamma * V_{t+1} - V_t      (V after the last token is 0: the end)
        A_t     = delta_t + gamma * lam * A_{t+1}  (computed from the last token back)
        returns = A_t + V_t                         (the lambda-return, the value's target)

    Masking rewards and values first makes every padded position worth 0, so the last real
    token bootstraps from 0 whatever junk the padding holds."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = delta + gamma * lam * next_adv
        advantages[:, t] = next_adv
        next_value = values[:, t]
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float) -> torch.Tensor:
    """PPO-clip (Schulman et al. 2017) as a loss: the mean over response tokens of

        max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps)),   rho = exp(log pi - log pi_old)

    The max of the negated terms is minus the min of the objective's: the pessimistic one,
    so a token gains nothing from moving its ratio beyond ``1 ± eps`` in its favour."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    return (torch.max(unclipped, clipped) * mask).sum() / mask.sum()
