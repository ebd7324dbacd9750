"""Worked solutions of notebook 05, the math of DPO.

- ``optimal_policy``: ``pi*(y) = pi_ref(y) exp(r(y) / beta) / Z``, the maximiser of
  ``E[r] - beta KL(pi || pi_ref)`` (Rafailov et al. 2023, eq. 4).
- ``dpo_loss``: ``-log sigmoid(beta * h)`` per pair, ``h`` the log-ratio margin (eq. 7).
- ``gradient_weight``: ``sigmoid(-beta * h)``, how hard a pair pushes (``dL/dh = -beta * w``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def optimal_policy(rewards: torch.Tensor, pi_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """``pi*`` over the responses, shape ``(k,)``.

    ``log pi* = log pi_ref + r / beta - log Z``: a softmax of ``log pi_ref + r / beta``
    divides by ``Z = sum_y pi_ref(y) exp(r(y) / beta)`` without ever forming ``exp(r / beta)``,
    which overflows for small beta."""
    return torch.softmax(torch.log(pi_ref) + rewards / beta, dim=-1)


def dpo_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
             ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor,
             beta: float) -> torch.Tensor:
    """One loss per pair, shape ``(B,)``: the Bradley–Terry negative log-likelihood of the
    label under the implicit reward ``beta * log(pi / pi_ref)``.

    ``h`` is the chosen log-ratio minus the rejected one, so ``h = 0`` (policy = reference)
    gives ``ln 2``. ``F.logsigmoid`` stays finite where ``log(sigmoid(x))`` underflows."""
    h = (logps_chosen - ref_logps_chosen) - (logps_rejected - ref_logps_rejected)
    return -F.logsigmoid(beta * h)


def gradient_weight(h: torch.Tensor, beta: float) -> torch.Tensor:
    """``sigmoid(-beta * h)``, same shape as ``h``: the derivative of ``-log sigmoid(beta h)``
    is ``-beta * sigmoid(-beta h)``, so a pair the policy orders wrongly (``h < 0``) weighs
    more than 1/2 and one it orders right by a wide margin weighs almost nothing."""
    return torch.sigmoid(-beta * h)
