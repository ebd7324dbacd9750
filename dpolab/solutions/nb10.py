"""Notebook 10 (beyond DPO): DPO-Positive and robust DPO, from their papers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpop_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
              ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor, beta: float,
              lam: float) -> torch.Tensor:
    """DPO-Positive (Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference
    Optimisation with DPO-Positive", eq. 3), one loss per pair:

        -log s(beta * (h - lam * max(0, log pi_ref(y_w) - log pi(y_w))))

    with ``h`` DPO's log-ratio margin. The penalty is zero while the chosen response is at
    least as likely as under the reference, and grows as it loses probability: the loss can
    no longer be lowered by pushing both responses down (likelihood displacement)."""
    h = (logps_chosen - ref_logps_chosen) - (logps_rejected - ref_logps_rejected)
    penalty = (ref_logps_chosen - logps_chosen).clamp(min=0)
    return -F.logsigmoid(beta * (h - lam * penalty))


def robust_dpo(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
               ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor, beta: float,
               eps: float) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO", eq. 8), labels flipped
    with probability ``eps < 1/2``:

        [-(1 - eps) log s(beta h) + eps log s(-beta h)] / (1 - 2 eps)

    Unbiased: with ``l(h)`` this loss, a label flipped with probability ``eps`` (which turns
    ``h`` into ``-h``) gives ``(1 - eps) l(h) + eps l(-h) = -log s(beta h)``, the DPO loss of
    the clean label."""
    h = (logps_chosen - ref_logps_chosen) - (logps_rejected - ref_logps_rejected)
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
