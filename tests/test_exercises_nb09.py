"""Notebook 09's checks accept the worked solutions, say "not done" for stubs and name the
typical mistakes."""

import numpy as np
import pytest

from dpolab import stats
from dpolab.exercises import nb09 as ex
from dpolab.solutions import nb09 as sol


def returns_none(*args, **kwargs):
    return None


def test_paired_gain_agrees_with_stats():
    a, b = ex.paired_scores()
    gain, lo, hi = sol.paired_gain(a, b, n_boot=4000)
    ref = stats.paired_diff(a, b, n_boot=4000)
    assert gain == pytest.approx(ref.mean) and lo == pytest.approx(ref.lo, abs=0.003)
    assert hi == pytest.approx(ref.hi, abs=0.003)


def unpaired(a, b, n_boot=2000, seed=0):
    """Each model resampled on its own draw of prompts."""
    rng, n = np.random.default_rng(seed), len(a)
    boots = (b[rng.integers(0, n, (n_boot, n))].mean(1)
             - a[rng.integers(0, n, (n_boot, n))].mean(1))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return (b - a).mean(), lo, hi


def sd_not_se(a, b, n_boot=2000, seed=0):
    d = b - a
    return d.mean(), d.mean() - 1.96 * d.std(ddof=1), d.mean() + 1.96 * d.std(ddof=1)


def permutation(a, b, n_boot=2000, seed=0):
    rng, d = np.random.default_rng(seed), b - a
    boots = [d[rng.permutation(len(d))].mean() for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return d.mean(), lo, hi


def normal_interval(a, b, n_boot=2000, seed=0):
    e = stats.mean_ci(np.asarray(b) - np.asarray(a))
    return e.mean, e.lo, e.hi


@pytest.mark.parametrize("wrong, says", [
    (unpaired, "as wide as an unpaired one"),
    (sd_not_se, "standard error"),
    (permutation, "*with* replacement"),
    (lambda a, b, n_boot=2000, seed=0: sol.paired_gain(b, a, n_boot, seed), "sign is flipped"),
    (lambda a, b, n_boot=2000, seed=0: (np.mean(b) / np.mean(a), 0, 1), "mean per-prompt"),
    (lambda a, b, n_boot=2000, seed=0: sol.paired_gain(a, b, n_boot, seed)[:2], "three numbers"),
])
def test_paired_gain_mistakes(wrong, says):
    v = ex.paired_gain.verdict(wrong)
    assert v.status == "wrong" and says in v.message, v.message


def test_a_normal_interval_is_accepted():
    assert ex.paired_gain.verdict(normal_interval).correct


@pytest.mark.parametrize("wrong, says", [
    (ex._no_sort, "sort the checkpoints by KL"),
    (ex._extrapolate, "return NaN"),
    (ex._nearest, "nearest checkpoint"),
    (ex._swapped, "swapped"),
    (lambda kl, gold, at: float(np.mean(gold)), "sort by KL, interpolate linearly"),
])
def test_gold_at_kl_mistakes(wrong, says):
    v = ex.gold_at_kl.verdict(wrong)
    assert v.status == "wrong" and says in v.message, v.message


def test_gold_at_kl_values():
    kl, gold = np.array([0.0, 2.0, 1.0]), np.array([0.5, 0.9, 0.7])
    assert sol.gold_at_kl(kl, gold, 1.5) == pytest.approx(0.8)
    assert np.isnan(sol.gold_at_kl(kl, gold, 2.5))
