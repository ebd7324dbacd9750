"""Checks of notebook 10 (beyond DPO): DPO-Positive and robust DPO.

Both run the learner's loss on eight pairs of sequence log-probs made here, some whose
chosen response lost probability against the reference and some whose chosen response
gained, with margins of both signs, and compare it with the worked solution and with what
each typical mistake gives.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..solutions import nb10 as sol
from . import Exercise, Wrong, close

__all__ = ["dpop_loss", "robust_dpo"]

BETA, LAM, EPS = 0.4, 3.0, 0.2


def pairs() -> tuple[torch.Tensor, ...]:
    """Policy and reference log-probs of chosen and rejected responses, eight pairs:
    chosen log-ratios from -3 to +3, rejected log-ratios of both signs."""
    ref_c = torch.tensor([-20.0, -15.0, -30.0, -12.0, -25.0, -18.0, -22.0, -16.0])
    ref_r = torch.tensor([-21.0, -14.0, -28.0, -15.0, -24.0, -19.0, -20.0, -17.0])
    logp_c = ref_c + torch.tensor([-3.0, -1.5, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0])
    logp_r = ref_r + torch.tensor([-4.0, 1.0, -2.0, 0.5, 2.5, -1.0, -0.5, 1.5])
    return logp_c, logp_r, ref_c, ref_r


def _margin(lc, lr, rc, rr):
    return (lc - rc) - (lr - rr)


def _call(fn: Callable, *args) -> torch.Tensor:
    out = fn(*(a.clone() for a in args[:4]), *args[4:])
    out = torch.as_tensor(out, dtype=torch.float32)
    if out.shape != args[0].shape:
        raise Wrong(f"return one loss per pair, shape {tuple(args[0].shape)}; got shape "
                    f"{tuple(out.shape)} (don't average over the batch)")
    return out


# --- DPO-Positive ---------------------------------------------------------------------------

def _dpop_mistakes(lc, lr, rc, rr, beta, lam) -> list[tuple[torch.Tensor, str]]:
    h = _margin(lc, lr, rc, rr)
    pen = (rc - lc).clamp(min=0)
    return [
        (-F.logsigmoid(beta * h),
         "your loss is plain DPO: the penalty λ·max(0, log π_ref(y_w) − log π(y_w)) is "
         "missing (or λ is not used)"),
        (-F.logsigmoid(beta * (h - lam * (lc - rc).clamp(min=0))),
         "the penalty's sign is flipped: it applies when the chosen response *lost* "
         "probability, max(0, log π_ref(y_w) − log π(y_w)), not when it gained"),
        (-F.logsigmoid(beta * (h + lam * pen)),
         "the penalty must be subtracted from the margin: it lowers the reward of a pair "
         "whose chosen response lost probability, which raises the loss"),
        (-F.logsigmoid(beta * (h - lam * (rc - lc))),
         "without max(0, ·) the term also rewards raising y_w above the reference, without "
         "limit: DPOP penalises only the chosen response falling below it"),
        (-F.logsigmoid(beta * h - lam * pen),
         "λ's term sits inside β in the paper: -log σ(β·(h − λ·penalty)); yours is "
         "-log σ(β·h − λ·penalty)"),
        (-F.logsigmoid(beta * h) + lam * pen,
         "the penalty goes inside the sigmoid, subtracted from the margin: "
         "-log σ(β·(h − λ·penalty)), not added to DPO's loss"),
        (-F.logsigmoid(-beta * (h - lam * pen)),
         "the sign inside the sigmoid is flipped: the loss is -log σ(β·(h − λ·penalty)), "
         "small when the chosen response wins"),
    ]


def diagnose_dpop(fn: Callable) -> None:
    args = (*pairs(), BETA, LAM)
    got, want = _call(fn, *args), sol.dpop_loss(*args)
    if close(got, want):
        if not close(_call(fn, *pairs(), BETA, 0.0), -F.logsigmoid(BETA * _margin(*pairs()))):
            raise Wrong("with λ = 0 your loss should be DPO's, -log σ(β·h)")
        return
    for value, message in _dpop_mistakes(*args):
        if close(got, value):
            raise Wrong(message)
    raise Wrong("differs from DPO-Positive, -log σ(β·(h − λ·max(0, log π_ref(y_w) − "
                "log π(y_w)))), with h DPO's log-ratio margin")


dpop_loss = Exercise("dpop_loss", diagnose_dpop, sol.dpop_loss)


# --- robust DPO ---------------------------------------------------------------------------------

def _robust_mistakes(h: torch.Tensor, beta: float, eps: float) -> list[tuple[torch.Tensor, str]]:
    ls_pos, ls_neg = F.logsigmoid(beta * h), F.logsigmoid(-beta * h)
    return [
        (-ls_pos,
         "your loss is plain DPO: eps is not used"),
        (-(1 - eps) * ls_pos - eps * ls_neg,
         "that is cDPO (Mitchell 2023), label smoothing: -(1−ε)·log σ(βh) − ε·log σ(−βh). It "
         "hedges, but it is biased; robust DPO *adds* ε·log σ(−βh) and divides by 1 − 2ε"),
        ((-(1 - eps) * ls_pos - eps * ls_neg) / (1 - 2 * eps),
         "that is cDPO divided by 1 − 2ε: the ε term enters with a plus sign, "
         "+ε·log σ(−βh), so that it subtracts the flipped label's loss"),
        (-(1 - eps) * ls_pos + eps * ls_neg,
         "the 1/(1 − 2ε) factor is missing: without it, the expected loss under flips is "
         "(1 − 2ε) times the clean DPO loss, not the clean loss"),
        ((-eps * ls_pos + (1 - eps) * ls_neg) / (1 - 2 * eps),
         "ε and 1 − ε are swapped: the observed label gets weight (1 − ε), its flip ε"),
        (((1 - eps) * ls_pos - eps * ls_neg) / (1 - 2 * eps),
         "the overall sign is flipped: the loss is [-(1 − ε)·log σ(βh) + ε·log σ(−βh)] / "
         "(1 − 2ε), positive when the observed label wins"),
        ((-(1 - eps) * ls_pos + eps * ls_neg) / (1 - eps),
         "divide by 1 − 2ε, not 1 − ε: that is what makes (1 − ε)·l(h) + ε·l(−h) equal the "
         "clean loss"),
    ]


def diagnose_robust(fn: Callable) -> None:
    lc, lr, rc, rr = pairs()
    got = _call(fn, lc, lr, rc, rr, BETA, EPS)
    want = sol.robust_dpo(lc, lr, rc, rr, BETA, EPS)
    if close(got, want):
        if not close(_call(fn, lc, lr, rc, rr, BETA, 0.0), -F.logsigmoid(BETA * _margin(*pairs()))):
            raise Wrong("with ε = 0 your loss should be DPO's, -log σ(β·h)")
        return
    for value, message in _robust_mistakes(_margin(lc, lr, rc, rr), BETA, EPS):
        if close(got, value):
            raise Wrong(message)
    # The defining property: averaged over a flip with probability eps (chosen and rejected
    # swapped), the loss equals clean DPO.
    flipped = _call(fn, lr, lc, rr, rc, BETA, EPS)
    clean = -F.logsigmoid(BETA * _margin(lc, lr, rc, rr))
    raise Wrong("not unbiased: averaged over a flip with probability ε, (1 − ε)·l(y_w, y_l) + "
                "ε·l(y_l, y_w) should equal the clean DPO loss -log σ(βh); yours is off by "
                f"{((1 - EPS) * got + EPS * flipped - clean).abs().max().item():.3g}")


robust_dpo = Exercise("robust_dpo", diagnose_robust, sol.robust_dpo)
