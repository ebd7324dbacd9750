"""Preference losses: how far the policy may move from the reference to prefer ``y_w`` over ``y_l``.

Every loss here reads the same four sequence log-probs of a batch of pairs (the policy's
and the reference's, of the chosen ``y_w`` and the rejected ``y_l`` response) and returns
one loss per pair. Most are functions of the *log-ratio margin*

    h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)]

and of ``beta``, which means the same thing in all of them: a larger ``beta`` keeps the
policy closer to the reference.

To add a loss, write a function with the signature of ``dpo_loss`` (extra options as
keyword arguments) and add it to ``LOSSES``; ``preference_loss`` and the trainer pick it
up by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def implicit_reward(logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """``beta * (log pi(y|x) - log pi_ref(y|x))``: the reward DPO's policy implicitly
    optimises, up to a per-prompt constant ``beta * log Z(x)`` that cancels in every pair
    (Rafailov et al. 2023, eq. 5)."""
    return beta * (logps - ref_logps)


def margin(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
           ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor) -> torch.Tensor:
    """``h``: how much more the policy than the reference prefers chosen over rejected."""
    return (logps_chosen - ref_logps_chosen) - (logps_rejected - ref_logps_rejected)


def dpo_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
             ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor, beta: float,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): ``-log sigmoid(beta * h)``.

    The Bradley–Terry likelihood of the label under the implicit reward. With
    ``label_smoothing = eps > 0`` it is conservative DPO (cDPO, Mitchell 2023, "A note on
    DPO with noisy preferences"): each label is assumed flipped with probability ``eps``,

        -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h),

    whose optimum is a finite margin instead of an ever-growing one."""
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    h = margin(logps_chosen, logps_rejected, ref_logps_chosen, ref_logps_rejected)
    loss = -F.logsigmoid(beta * h)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-beta * h)
    return loss


def ipo_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
             ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor,
             beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from
    Human Preferences", eq. 17, with ``tau = beta``): ``(h - 1 / (2 * beta))**2``.

    A squared loss regresses the margin to a finite target, so the policy cannot push it
    to infinity on deterministic preferences as DPO can. TRL's ``loss_type="ipo"`` divides
    each log-ratio by its response's token count (a per-token margin, which its authors
    confirmed is what the paper's experiments used); with sequence log-probs averaged over
    tokens (``average_logps=True`` in the trainer) this function computes exactly that."""
    h = margin(logps_chosen, logps_rejected, ref_logps_chosen, ref_logps_rejected)
    return (h - 1 / (2 * beta)) ** 2


def hinge_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
               ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor,
               beta: float) -> torch.Tensor:
    """Hinge, after SLiC-HF (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration
    with Human Feedback"): ``max(0, 1 - beta * h)``.

    Zero loss, and zero gradient, once the margin reaches ``1 / beta``. SLiC's hinge uses
    plain log-probs; this is the reference-relative form TRL's ``loss_type="hinge"`` uses."""
    h = margin(logps_chosen, logps_rejected, ref_logps_chosen, ref_logps_rejected)
    return torch.relu(1 - beta * h)


LOSSES = {"sigmoid": dpo_loss, "ipo": ipo_loss, "hinge": hinge_loss}


def preference_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
                    ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor,
                    beta: float, loss_type: str = "sigmoid", **options: float,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses of ``LOSSES[loss_type]`` and the implicit rewards of chosen and
    rejected (detached: they are metrics, not part of the loss)."""
    if loss_type not in LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}: expected one of {sorted(LOSSES)}")
    losses = LOSSES[loss_type](logps_chosen, logps_rejected, ref_logps_chosen,
                               ref_logps_rejected, beta, **options)
    chosen_rewards = implicit_reward(logps_chosen, ref_logps_chosen, beta).detach()
    rejected_rewards = implicit_reward(logps_rejected, ref_logps_rejected, beta).detach()
    return losses, chosen_rewards, rejected_rewards
