"""Uncertainty for every number the course reports, and the one function that turns a
result into words.

- ``mean_ci``: a mean with its standard error and 95% t interval.
- ``paired_diff``: the difference between two models scored on the *same* prompts with the
  same sampling seeds. Pairing cancels the prompt-to-prompt spread both share, so its
  interval is much narrower than the two single intervals suggest. The interval is a
  percentile bootstrap over prompts and, when several seeds are given, over seeds too.
- ``std_diff``: the difference between two methods' seed-to-seed spreads, with a bootstrap
  interval over seeds (stability, measured).
- ``prompts_needed``: how many evaluation prompts a paired comparison needs to decide a
  difference of a given size, from the spread measured in a pilot.
- ``verdict`` / ``describe``: prose may say "improved" (or "ahead", "holds") only when the
  interval excludes zero; otherwise it says "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

Z95 = 1.959964
# Student's t, 97.5th percentile, for 1..30 degrees of freedom (any statistics table)
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t95(df: int) -> float:
    """The multiplier of a 95% interval of a mean of ``df + 1`` numbers: Student's t quantile
    (a mean of three seeds needs 4.30 standard errors, not 1.96). Beyond 30 degrees of
    freedom, its expansion around the normal quantile (Abramowitz & Stegun 26.7.5)."""
    if df < 1:
        raise ValueError(f"an interval needs at least one degree of freedom, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error and 95% interval ``[lo, hi]``."""

    mean: float
    se: float
    lo: float
    hi: float
    n: int

    @property
    def decided(self) -> bool:
        """The interval excludes zero."""
        return self.lo > 0 or self.hi < 0

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"

    def pm(self, digits: int = 3) -> str:
        """``mean ± half the interval's width`` for a table cell."""
        return f"{self.mean:.{digits}f} ± {(self.hi - self.lo) / 2:.{digits}f}"


def _clean(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    return a[~np.isnan(a)]


def mean_ci(x: Sequence[float] | np.ndarray) -> Estimate:
    """Mean of ``x`` (NaNs, axes that do not apply, left out) with a 95% t interval (the
    normal one, for many numbers; much wider for a handful of seeds)."""
    a = _clean(x)
    if a.size == 0:
        raise ValueError("mean_ci needs at least one number that is not NaN")
    m = float(a.mean())
    if a.size == 1:
        return Estimate(m, math.inf, -math.inf, math.inf, 1)
    se = float(a.std(ddof=1) / math.sqrt(a.size))
    half = t95(a.size - 1) * se
    return Estimate(m, se, m - half, m + half, int(a.size))


def paired_diff(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                n_boot: int = 2000, seed: int = 0) -> Estimate:
    """``b - a`` on paired scores. ``a`` and ``b`` are per-prompt scores, shape
    ``(prompts,)``, or ``(seeds, prompts)`` for several sampling seeds of the same prompts;
    a pair where either side is NaN is left out. Bootstrap over prompts (and over seeds):
    a 95% percentile interval from ``n_boot`` resamples."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same shape (seeds, prompts): got {a.shape} "
                         f"and {b.shape}; score both models on the same prompts and seeds")
    d = b - a
    keep = ~np.isnan(d).any(axis=0)
    d = d[:, keep]
    if d.shape[1] == 0:
        raise ValueError("no prompt has a score for both models")
    rng = np.random.default_rng(seed)
    seeds, prompts = d.shape
    si = rng.integers(0, seeds, size=(n_boot, seeds))
    pi = rng.integers(0, prompts, size=(n_boot, prompts))
    # resample seeds, then prompts (the same prompt draw for every seed of a resample)
    boots = np.take_along_axis(d[si], pi[:, None, :].repeat(seeds, axis=1), axis=2)
    boots = boots.mean(axis=(1, 2))
    m = float(d.mean())
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Estimate(m, float(boots.std(ddof=1)), float(lo), float(hi), int(d.size))


def std_diff(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
             n_boot: int = 2000, seed: int = 0) -> Estimate:
    """``std(a) - std(b)`` for two independent sets of per-seed results (one number per
    training seed), with a 95% percentile interval from resampling each set's seeds. With
    three seeds a side the interval is wide: that is the honest answer."""
    a, b = _clean(a), _clean(b)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"a spread needs at least two seeds a side, got {a.size} and {b.size}")
    rng = np.random.default_rng(seed)
    ra = a[rng.integers(0, a.size, size=(n_boot, a.size))].std(axis=1, ddof=1)
    rb = b[rng.integers(0, b.size, size=(n_boot, b.size))].std(axis=1, ddof=1)
    boots = ra - rb
    lo, hi = np.percentile(boots, [2.5, 97.5])
    d = float(a.std(ddof=1) - b.std(ddof=1))
    return Estimate(d, float(boots.std(ddof=1)), float(lo), float(hi), int(a.size + b.size))


def prompts_needed(d: Sequence[float] | np.ndarray, effect: float | None = None,
                   power: float = 0.8) -> float:
    """Evaluation prompts a paired comparison needs so that its 95% interval excludes zero
    with probability ``power`` when the true difference is ``effect`` (default: the mean of
    ``d``): ``n = ((z_0.975 + z_power) sd / effect)^2``, the usual normal approximation.

    ``d`` holds a pilot's per-prompt differences, shape ``(prompts,)`` or ``(seeds,
    prompts)``. With seeds, the spread between seeds' means that more prompts cannot remove
    is estimated apart (its variance less what the prompts explain); if it alone keeps the
    interval too wide, no number of prompts is enough and the answer is ``inf``: more seeds
    are."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    d = d[:, ~np.isnan(d).any(axis=0)]
    seeds, prompts = d.shape
    if prompts < 2:
        raise ValueError("sizing needs a pilot with at least two prompts")
    effect = abs(float(d.mean()) if effect is None else effect)
    if not 0.5 <= power < 1:
        raise ValueError(f"power must be in [0.5, 1), got {power}")
    if effect == 0:
        return math.inf
    within = float(d.var(axis=1, ddof=1).mean())  # sampling and prompt-to-prompt spread
    between = max(float(d.mean(axis=1).var(ddof=1)) - within / prompts, 0.0) if seeds > 1 \
        else 0.0
    z = Z95 + NormalDist().inv_cdf(power)
    budget = (effect / z) ** 2 - between / seeds  # the variance the prompts may still add
    if budget <= 0:
        return math.inf
    return float(math.ceil(within / (seeds * budget)))


def verdict(est: Estimate, up: str = "improved", down: str = "fell",
            noise: str = "within noise") -> str:
    """The word a sentence may use: ``up`` or ``down`` only when the 95% interval excludes
    zero, ``noise`` otherwise."""
    if est.lo > 0:
        return up
    if est.hi < 0:
        return down
    return noise


def describe(what: str, est: Estimate, up: str = "improved", down: str = "fell",
             unit: str = "") -> str:
    """A sentence fragment: ``"total gold improved by +0.166 (95% CI +0.120 to +0.211)"`` or
    ``"helpful changed by +0.012, within noise (95% CI -0.030 to +0.054)"``."""
    word = verdict(est, up, down)
    ci = f"(95% CI {est.lo:+.3f} to {est.hi:+.3f}{unit})"
    if word == "within noise":
        return f"{what} changed by {est.mean:+.3f}{unit}, within noise {ci}"
    return f"{what} {word} by {est.mean:+.3f}{unit} {ci}"


def proportion(k: int, n: int) -> Estimate:
    """A share ``k/n`` with its Wilson 95% interval (Wilson 1927), sound at 0% and 100%
    where ``mean ± 1.96 se`` collapses to a point."""
    if not 0 <= k <= n or n == 0:
        raise ValueError(f"a share needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    p, z = k / n, Z95
    shrink = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / shrink
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / shrink
    return Estimate(p, half / z, centre - half, centre + half, n)


def unpaired_diff(a: Estimate, b: Estimate) -> Estimate:
    """``a - b`` for two independent estimates (different prompts or pairs: nothing to pair),
    with a normal 95% interval."""
    se = math.hypot(a.se, b.se)
    d = a.mean - b.mean
    return Estimate(d, se, d - Z95 * se, d + Z95 * se, a.n + b.n)
