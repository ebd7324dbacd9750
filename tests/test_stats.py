"""Uncertainty machinery: intervals cover what they should, pairing narrows them, the words
follow the interval, and ``evaluate.compare`` pairs two models on the same prompts."""

import numpy as np
import pytest

from dpolab import evaluate, model, stats, world


def test_mean_ci_is_the_normal_interval_of_a_mean():
    x = np.array([0.0, 1.0, 1.0, 0.0, 1.0, np.nan])  # the NaN (axis not applicable) is left out
    e = stats.mean_ci(x)
    assert e.n == 5 and e.mean == pytest.approx(0.6)
    assert e.se == pytest.approx(np.std([0, 1, 1, 0, 1], ddof=1) / np.sqrt(5))
    half = 1.959964 * e.se
    assert e.lo == pytest.approx(0.6 - half) and e.hi == pytest.approx(0.6 + half)
    with pytest.raises(ValueError, match="not NaN"):
        stats.mean_ci([np.nan])


def test_pairing_cancels_the_spread_both_models_share():
    rng = np.random.default_rng(0)
    difficulty = rng.random(400)  # per-prompt spread, shared by both models
    a = difficulty + rng.normal(0, 0.05, 400)
    b = difficulty + 0.03 + rng.normal(0, 0.05, 400)
    paired = stats.paired_diff(a, b)
    unpaired_se = np.hypot(stats.mean_ci(a).se, stats.mean_ci(b).se)
    assert paired.se < unpaired_se / 3
    assert paired.lo > 0 and paired.decided  # +0.03 is decided once paired...
    assert stats.mean_ci(b).lo < stats.mean_ci(a).hi  # ...though the two intervals overlap


def test_paired_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(200):
        a = rng.random(60)
        b = a + 0.1 + rng.normal(0, 0.3, 60)
        e = stats.paired_diff(a, b, n_boot=400, seed=i)
        hits += e.lo <= 0.1 <= e.hi
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_diff_over_seeds_and_prompts():
    rng = np.random.default_rng(2)
    a = rng.random((3, 100))
    b = a + np.array([[0.0], [0.1], [0.2]])  # the gain depends on the seed
    e = stats.paired_diff(a, b)
    assert e.mean == pytest.approx(0.1) and e.n == 300
    # the seed-to-seed spread widens the interval: with 3 seeds it can't be tiny
    assert e.hi - e.lo > 0.1
    with pytest.raises(ValueError, match="same shape"):
        stats.paired_diff(a, b[:, :50])


def test_the_words_follow_the_interval():
    up = stats.Estimate(0.05, 0.01, 0.03, 0.07, 100)
    down = stats.Estimate(-0.05, 0.01, -0.07, -0.03, 100)
    noise = stats.Estimate(0.05, 0.03, -0.01, 0.11, 100)
    assert stats.verdict(up) == "improved" and stats.verdict(down) == "fell"
    assert stats.verdict(noise) == "within noise"
    assert stats.verdict(up, up="ahead") == "ahead"
    assert stats.describe("total gold", up) == (
        "total gold improved by +0.050 (95% CI +0.030 to +0.070)")
    assert "within noise" in stats.describe("helpful", noise)


def test_compare_pairs_two_models_on_the_same_prompts():
    m, tok = model.load(model.SFT)
    prompts = world.World(0).prompts(32, "eval")
    a = evaluate.evaluate(m, tok, prompts, seed=0)
    b = evaluate.evaluate(m, tok, prompts, seed=0)
    table = evaluate.compare({"SFT": a, "again": b})
    assert list(table.index) == ["SFT", "again", "again − SFT"]
    # the same model, prompts and seed: the paired difference is exactly zero
    assert table.loc["again − SFT", "total"].startswith("+0.000 [+0.000, +0.000] within noise")
    assert "±" in table.loc["SFT", "total"]
    other = evaluate.evaluate(m, tok, world.World(1).prompts(32, "eval"), seed=0)
    with pytest.raises(ValueError, match="same prompts"):
        evaluate.compare({"SFT": a, "other": other})


def test_proportion_is_the_wilson_interval_and_sound_at_the_edges():
    e = stats.proportion(30, 30)
    assert e.mean == 1.0 and e.hi == pytest.approx(1.0) and 0.88 < e.lo < 0.89
    half = stats.proportion(5, 10)
    assert half.lo == pytest.approx(1 - half.hi) and half.lo == pytest.approx(0.2366, abs=1e-3)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        stats.proportion(3, 2)


def test_unpaired_difference_adds_the_variances():
    a, b = stats.proportion(30, 30), stats.proportion(20, 30)
    d = stats.unpaired_diff(a, b)
    assert d.mean == pytest.approx(1 / 3) and d.se == pytest.approx(np.hypot(a.se, b.se))
