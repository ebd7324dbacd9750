"""Notebook 09 (DPO vs RLHF): a paired gain with its interval, and gold reward at a matched
KL."""

from __future__ import annotations

import numpy as np


def paired_gain(a: np.ndarray, b: np.ndarray, n_boot: int = 2000,
                seed: int = 0) -> tuple[float, float, float]:
    """Mean gain ``b - a`` of model ``b`` over model ``a``, scored on the same prompts
    (``a[i]`` and ``b[i]`` are prompt ``i``'s scores), with a 95% percentile bootstrap
    interval: resample *prompts* with replacement, the same draw for both models, so each
    resample keeps the pairs together and the prompt-to-prompt spread they share cancels.
    Returns ``(gain, lo, hi)``."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def gold_at_kl(kl: np.ndarray, gold: np.ndarray, at: float) -> float:
    """Gold reward of one run at KL ``at``, interpolated linearly between its checkpoints
    (sorted by KL first: a run's KL need not grow at every checkpoint); NaN outside the KL
    range the run covers, where there is no measurement to interpolate."""
    kl, gold = np.asarray(kl, dtype=float), np.asarray(gold, dtype=float)
    order = np.argsort(kl)
    kl, gold = kl[order], gold[order]
    if not kl[0] <= at <= kl[-1]:
        return float("nan")
    return float(np.interp(at, kl, gold))
