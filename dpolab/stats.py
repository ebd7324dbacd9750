"""Uncertainty for every number the course reports, and the one function that turns a
result into words.

- ``mean_ci``: a mean of per-prompt scores with its standard error and 95% interval.
- ``paired_diff``: the difference between two models scored on the *same* prompts with the
  same sampling seeds. Pairing cancels the prompt-to-prompt spread both share, so its
  interval is much narrower than the two single intervals suggest. The interval is a
  percentile bootstrap over prompts and, when several seeds are given, over seeds too.
- ``verdict`` / ``describe``: prose may say "improved" (or "ahead", "holds") only when the
  interval excludes zero; otherwise it says "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959964


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
        """``mean ± 1.96 se`` for a table cell."""
        return f"{self.mean:.{digits}f} ± {Z95 * self.se:.{digits}f}"


def _clean(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    return a[~np.isnan(a)]


def mean_ci(x: Sequence[float] | np.ndarray) -> Estimate:
    """Mean of ``x`` (NaNs, axes that do not apply, left out) with a normal 95% interval."""
    a = _clean(x)
    if a.size == 0:
        raise ValueError("mean_ci needs at least one number that is not NaN")
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.inf
    m = float(a.mean())
    return Estimate(m, se, m - Z95 * se, m + Z95 * se, int(a.size))


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
