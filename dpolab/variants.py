"""Beyond DPO: the preference losses that followed it, each one small function.

All share the signature of ``losses.dpo_loss`` — the sequence log-probs of chosen and
rejected under the policy and the reference, and ``beta`` — so the DPO trainer runs any of
them by name: ``register`` adds one (with fixed options, if any) to ``losses.LOSSES`` and
returns the name to pass as ``DPOConfig(loss_type=...)``.

    loss        paper                               what it changes
    ipo         Azar et al. 2023                    squared loss: a finite target margin
    cdpo        Mitchell 2023                       labels assumed flipped with prob. eps
    robust      Chowdhury et al. 2024               unbiased loss under flip rate eps
    hinge       Zhao et al. 2023 (SLiC-HF)          zero gradient past margin 1/beta
    simpo       Meng et al. 2024                    no reference; mean log-probs; margin gamma
    orpo        Hong et al. 2024                    no reference; odds ratio + NLL on chosen
    kto         Ethayarajh et al. 2024              unpaired: each response vs a KL baseline
    dpop        Pal et al. 2024 (Smaug)             DPO + a penalty when log pi(y_w) falls
                                                    below the reference's
    rpo         Pang et al. 2024                    DPO + an NLL term on the chosen response
    apo_zero    D'Oosterlinck et al. 2024 (APO)     chosen up, rejected down, each on its own

SimPO and ORPO are defined on *mean* per-token log-probs (train them with
``average_logps=True``); they ignore the reference arguments. ``beta`` keeps its course-wide
meaning where the loss has a reference (larger: closer to it); in SimPO and ORPO there is
no reference, and ``beta`` is only the scale of the reward margin.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import losses
from .losses import dpo_loss, hinge_loss, ipo_loss, margin


def cdpo_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
              ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor, beta: float,
              label_smoothing: float = 0.1) -> torch.Tensor:
    """Conservative DPO (Mitchell 2023): ``-(1-eps) log s(beta h) - eps log s(-beta h)``.

    ``losses.dpo_loss`` with ``label_smoothing = eps``. TRL's ``DPOTrainer`` has ignored
    ``label_smoothing`` for ``loss_type="sigmoid"`` since 0.29 (its ``"aot"``/``"exo_pair"``
    losses read it; cDPO itself is gone): there is no TRL counterpart to test against."""
    return dpo_loss(logps_chosen, logps_rejected, ref_logps_chosen, ref_logps_rejected, beta,
                    label_smoothing=label_smoothing)


def robust_dpo_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
                    ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor,
                    beta: float, label_smoothing: float = 0.1) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO", eq. 8), flip rate ``eps``:

        [-(1 - eps) log s(beta h) + eps log s(-beta h)] / (1 - 2 eps)

    An *unbiased* estimate of the clean-label DPO loss when each label is flipped with
    probability ``eps``: in expectation over the flips it equals DPO on the true labels.
    cDPO instead mixes both labels, which shrinks the margin it aims for. Same as TRL's
    ``loss_type="robust"``."""
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    h = margin(logps_chosen, logps_rejected, ref_logps_chosen, ref_logps_rejected)
    eps = label_smoothing
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


def simpo_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
               ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor,
               beta: float = 2.0, gamma: float = 1.0) -> torch.Tensor:
    """SimPO (Meng et al. 2024, eq. 6): ``-log s(beta * (lp_w - lp_l) - gamma)`` on *mean*
    per-token log-probs ``lp`` and no reference model.

    The reward is the length-normalised log-likelihood itself, so a long response gains
    nothing from its length, and ``gamma`` asks for a minimum reward gap. TRL's
    ``CPOTrainer(loss_type="simpo")`` (``trl.experimental.cpo``) computes the same term (with
    ``gamma`` as ``simpo_gamma``), but adds ``cpo_alpha`` times an NLL loss on the chosen
    responses, 1.0 by default: the two agree only with ``cpo_alpha=0``. The reference
    arguments are ignored."""
    return -F.logsigmoid(beta * (logps_chosen - logps_rejected) - gamma)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable on both sides of ``-ln 2`` (Mächler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)),
                       torch.log(-torch.expm1(x)))


def log_odds_ratio(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor) -> torch.Tensor:
    """``log odds(y_w) - log odds(y_l)`` with ``odds(y) = p / (1 - p)`` and ``log p`` the mean
    per-token log-prob (Hong et al. 2024, eq. 5)."""
    return (logps_chosen - logps_rejected) - (log1mexp(logps_chosen) - log1mexp(logps_rejected))


def orpo_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
              ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor,
              beta: float = 0.1) -> torch.Tensor:
    """ORPO (Hong et al. 2024, eq. 6): ``-lp_w - beta * log s(log odds ratio)``, per pair.

    SFT and preference in one stage, no reference: the NLL of the chosen response (its mean
    per-token log-prob ``lp_w``) plus ``beta`` (the paper's ``lambda``) times the odds-ratio
    loss. TRL's ``ORPOTrainer`` (``trl.experimental.orpo``) differs in its NLL term: a
    token-weighted cross entropy over the whole batch that counts the *prompt* tokens of the
    chosen rows too (its code: "computed over the full prompt and response"), while the
    odds-ratio term, ``mean(beta * log s(log odds))`` on mean response log-probs, is the same.
    So the two agree on the odds-ratio term, not on the total. The reference arguments are
    ignored."""
    return -logps_chosen - beta * F.logsigmoid(log_odds_ratio(logps_chosen, logps_rejected))


def kto_kl(logratios: torch.Tensor) -> torch.Tensor:
    """KTO's reference point ``z0``: a batch estimate of KL(policy || reference), clamped at 0
    and detached (no gradient flows through the baseline).

    The paper (and TRL) estimate it on *mismatched* pairs: prompt ``x_i`` with the
    completion of ``x_{i+1}``, one extra forward pass of both models. Here it is the mean
    log-ratio of the batch's own responses, which costs nothing; both are biased estimates
    of the same quantity, used only as a baseline."""
    return logratios.mean().detach().clamp(min=0)


def kto_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
             ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             kl: torch.Tensor | None = None) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024, eq. 7) on a batch of pairs read as unpaired examples:

        desirable   y_w:  w_d * (1 - s(beta * (r_w - z0)))
        undesirable y_l:  w_u * (1 - s(beta * (z0 - r_l)))

    with ``r = log pi(y|x) - log pi_ref(y|x)`` and ``z0`` the KL baseline (``kto_kl`` of all
    the batch's log-ratios unless ``kl`` is given). Each response is judged against the
    baseline, not against its partner, so KTO works with thumbs-up/down data. Returns one
    loss per pair: the sum of its two halves (TRL averages over the 2B responses instead,
    i.e. half of our per-pair mean)."""
    r_w, r_l = logps_chosen - ref_logps_chosen, logps_rejected - ref_logps_rejected
    z0 = kto_kl(torch.cat([r_w, r_l])) if kl is None else kl
    return (desirable_weight * (1 - torch.sigmoid(beta * (r_w - z0)))
            + undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r_l))))


def dpop_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
              ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor, beta: float,
              lam: float = 5.0) -> torch.Tensor:
    """DPO-Positive (Pal et al. 2024, "Smaug", eq. 3):
    ``-log s(beta * (h - lam * max(0, log pi_ref(y_w) - log pi(y_w))))``.

    Plain DPO is content to open the margin ``h`` by lowering both responses (likelihood
    displacement). DPOP subtracts a penalty from the margin as soon as the chosen response
    becomes *less* likely than under the reference, so lowering it no longer pays."""
    h = margin(logps_chosen, logps_rejected, ref_logps_chosen, ref_logps_rejected)
    penalty = torch.clamp(ref_logps_chosen - logps_chosen, min=0)
    return -F.logsigmoid(beta * (h - lam * penalty))


def rpo_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
             ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor, beta: float,
             alpha: float = 0.05) -> torch.Tensor:
    """DPO plus ``alpha`` times the negative log-likelihood of the chosen response (the RPO
    loss of Pang et al. 2024, "Iterative Reasoning Preference Optimization"; TRL's
    ``loss_type=["sigmoid", "sft"]``). The NLL here is the *summed* log-prob of the response,
    the unit every loss in this module works in; Pang et al. divide it by the response's
    length, which rescales ``alpha`` by a length that is short and similar across this
    world's responses."""
    return dpo_loss(logps_chosen, logps_rejected, ref_logps_chosen, ref_logps_rejected,
                    beta) - alpha * logps_chosen


def apo_zero_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
                  ref_logps_chosen: torch.Tensor, ref_logps_rejected: torch.Tensor,
                  beta: float) -> torch.Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, "Anchored Preference Optimization", eq. 7):
    ``(1 - s(beta * r_w)) + s(beta * r_l)`` with ``r = log pi(y|x) - log pi_ref(y|x)``.

    Each response is anchored to the reference on its own: the loss falls only by raising
    the chosen response and lowering the rejected one, never by lowering both. Same as TRL's
    ``loss_type="apo_zero"``."""
    r_w, r_l = logps_chosen - ref_logps_chosen, logps_rejected - ref_logps_rejected
    return (1 - torch.sigmoid(beta * r_w)) + torch.sigmoid(beta * r_l)


VARIANTS = {"sigmoid": dpo_loss, "ipo": ipo_loss, "cdpo": cdpo_loss, "robust": robust_dpo_loss,
            "hinge": hinge_loss, "simpo": simpo_loss, "orpo": orpo_loss, "kto": kto_loss,
            "dpop": dpop_loss, "rpo": rpo_loss, "apo_zero": apo_zero_loss}
REFERENCE_FREE = ("simpo", "orpo")  # defined on mean log-probs, no reference model


def register(loss_type: str, **options: float) -> str:
    """Add ``VARIANTS[loss_type]``, with fixed ``options`` (those ``DPOConfig`` does not
    carry), to ``losses.LOSSES`` and return its name for ``DPOConfig(loss_type=...)``:
    ``register("simpo")`` returns ``"simpo"``, ``register("robust", label_smoothing=0.2)``
    returns ``"robust(label_smoothing=0.2)"``."""
    if loss_type not in VARIANTS:
        raise ValueError(f"unknown loss_type {loss_type!r}: expected one of {sorted(VARIANTS)}")
    name = loss_type if not options else \
        f"{loss_type}({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})"
    fn = VARIANTS[loss_type]
    losses.LOSSES[name] = functools.partial(fn, **options) if options else fn
    return name
