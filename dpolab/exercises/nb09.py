"""Checks of notebook 09 (DPO vs RLHF): a paired gain with its bootstrap interval, and gold
reward interpolated at a matched KL.

Both run on small synthetic data made here with a local generator, so they do not depend on
the committed experiment results. ``paired_gain``'s interval is compared with
``stats.paired_diff`` (a percentile bootstrap over prompts) by its width: a resampling with
another seed gives a slightly different interval, a conceptual mistake a very different one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .. import stats
from ..solutions import nb09 as sol
from . import Exercise, Wrong

__all__ = ["gold_at_kl", "paired_gain"]


# --- paired gain ----------------------------------------------------------------------------

def paired_scores(n: int = 60, gain: float = 0.04, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt scores of two models on the same ``n`` prompts: a prompt difficulty both
    share (spread 0.25) plus each model's own noise (0.06), ``b`` ahead by ``gain``."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.55, 0.25, n)
    return (difficulty + rng.normal(0, 0.06, n),
            difficulty + gain + rng.normal(0, 0.06, n))


def diagnose_paired_gain(fn: Callable) -> None:
    a, b = paired_scores()
    out = fn(a.copy(), b.copy(), n_boot=2000, seed=0)
    try:
        gain, lo, hi = (float(x) for x in out)
    except (TypeError, ValueError) as e:
        raise Wrong(f"return three numbers, (gain, lo, hi); got {out!r}") from e
    d = b - a
    if math.isclose(gain, -d.mean(), abs_tol=1e-9):
        raise Wrong("the sign is flipped: the gain of b over a is the mean of b − a")
    if not math.isclose(gain, d.mean(), abs_tol=1e-9):
        raise Wrong(f"the gain should be the mean per-prompt difference b − a, "
                    f"{d.mean():+.4f}; you returned {gain:+.4f}")
    ref = stats.paired_diff(a, b, n_boot=4000, seed=0)
    width, want = hi - lo, ref.hi - ref.lo
    if width < 0.25 * want:
        raise Wrong("your interval has (almost) no width: every resample has the same mean. "
                    "Draw prompt indices *with* replacement (rng.integers), not a permutation")
    if width > 1.6 * want:
        n = len(d)
        unpaired = 2 * stats.Z95 * math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / n)
        sd = 2 * stats.Z95 * d.std(ddof=1)
        if abs(math.log(width / unpaired)) < abs(math.log(width / sd)):
            raise Wrong(f"your interval is {width / want:.1f}x too wide, as wide as an unpaired "
                        "one: resample the prompts once and take the same indices for both "
                        "models (or resample the differences b − a), so that the spread between "
                        "prompts, which both models share, cancels")
        raise Wrong(f"your interval is {width / want:.1f}x too wide, about ±1.96 standard "
                    "deviations of the per-prompt differences: the uncertainty of a *mean* is "
                    "its standard error, sd/√n; bootstrap the mean of each resample")
    if width > 1.25 * want or width < 0.8 * want:
        raise Wrong(f"your interval's width {width:.4f} differs from stats.paired_diff's "
                    f"{want:.4f}: a 95% percentile interval takes the 2.5th and 97.5th "
                    "percentiles of the resampled means")
    if not lo < gain < hi or abs((lo + hi) / 2 - gain) > 0.25 * want:
        raise Wrong(f"your interval [{lo:+.4f}, {hi:+.4f}] is not centred on the gain "
                    f"{gain:+.4f}: resample the differences, not shifted copies of them")


paired_gain = Exercise("paired_gain", diagnose_paired_gain, sol.paired_gain)


# --- gold at a matched KL ----------------------------------------------------------------------

# One run's checkpoints, in training order: KL dips once (as sampled KL can), gold rises and
# falls back.
RUN_KL = np.array([0.0, 0.6, 1.4, 1.1, 2.5, 4.0])
RUN_GOLD = np.array([0.55, 0.62, 0.70, 0.64, 0.69, 0.61])
QUERIES = (0.3, 1.25, 2.0, 3.9, 4.0, 5.0, -0.5)


def _no_sort(kl, gold, at):
    return float(np.interp(at, kl, gold)) if kl.min() <= at <= kl.max() else float("nan")


def _extrapolate(kl, gold, at):
    o = np.argsort(kl)
    return float(np.interp(at, kl[o], gold[o]))


def _nearest(kl, gold, at):
    return float(gold[np.argmin(np.abs(kl - at))]) if kl.min() <= at <= kl.max() else float("nan")


def _swapped(kl, gold, at):
    o = np.argsort(gold)
    return float(np.interp(at, gold[o], kl[o]))


GOLD_MISTAKES = [
    (_no_sort, "sort the checkpoints by KL before interpolating: np.interp assumes increasing "
               "x, and a run's KL need not grow at every checkpoint"),
    (_extrapolate, "outside the KL range the run covers there is no measurement: return NaN "
                   "instead of holding the end value (np.interp clamps silently)"),
    (_nearest, "you took the nearest checkpoint: interpolate linearly between the two "
               "checkpoints whose KL lies on either side of `at`"),
    (_swapped, "KL and gold are swapped: interpolate gold as a function of KL"),
]


def _same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or (not math.isnan(x) and not math.isnan(y)
                                                 and math.isclose(x, y, abs_tol=1e-9))


def diagnose_gold_at_kl(fn: Callable) -> None:
    got = [float(fn(RUN_KL.copy(), RUN_GOLD.copy(), at)) for at in QUERIES]
    want = [sol.gold_at_kl(RUN_KL, RUN_GOLD, at) for at in QUERIES]
    if all(_same(g, w) for g, w in zip(got, want, strict=True)):
        return
    for mistake, message in GOLD_MISTAKES:
        if all(_same(g, mistake(RUN_KL, RUN_GOLD, at)) for g, at in zip(got, QUERIES, strict=True)):
            raise Wrong(message)
    bad = [(at, g, w) for at, g, w in zip(QUERIES, got, want, strict=True) if not _same(g, w)]
    at, g, w = bad[0]
    raise Wrong(f"at KL {at} you gave {g}, the run's checkpoints give {w}: sort by KL, "
                "interpolate linearly, NaN outside the run's range")


gold_at_kl = Exercise("gold_at_kl", diagnose_gold_at_kl, sol.gold_at_kl)
