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
    half = 2.7764 * e.se  # Student's t with 4 degrees of freedom
    assert e.lo == pytest.approx(0.6 - half) and e.hi == pytest.approx(0.6 + half)
    assert e.pm() == f"0.600 ± {half:.3f}"
    with pytest.raises(ValueError, match="not NaN"):
        stats.mean_ci([np.nan])


def test_t_multiplier_is_students_and_meets_the_normal_one():
    assert stats.t95(2) == pytest.approx(4.303, abs=1e-3)
    assert stats.t95(31) == pytest.approx(2.0395, abs=1e-4)  # the expansion, past the table
    assert stats.t95(120) == pytest.approx(1.9799, abs=1e-4)
    assert stats.t95(10**6) == pytest.approx(stats.Z95, abs=1e-5)


def test_an_interval_over_three_seeds_covers_95_percent():
    rng = np.random.default_rng(5)
    hits = [stats.mean_ci(rng.normal(0.0, 1.0, 3)) for _ in range(4000)]
    covered = np.mean([e.lo <= 0.0 <= e.hi for e in hits])
    assert 0.935 <= covered <= 0.965  # a normal interval (1.96 se) covers about 82% here


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


def test_prompts_needed_gives_the_power_it_promises():
    rng = np.random.default_rng(3)
    pilot = rng.normal(0.1, 0.5, 400)  # a pilot's per-prompt differences
    n = stats.prompts_needed(pilot, effect=0.1)
    expected = ((1.959964 + 0.841621) * pilot.std(ddof=1) / 0.1) ** 2
    assert n == np.ceil(expected) and 150 < n < 250
    def power(k):  # the share of fresh experiments with k prompts whose interval excludes 0
        return np.mean([stats.mean_ci(rng.normal(0.1, 0.5, k)).decided for _ in range(1000)])
    assert 0.75 <= power(int(n)) <= 0.85
    assert power(int(n) // 3) < 0.5  # a third of the prompts: far less often decided
    assert stats.prompts_needed(pilot, effect=0.2) == pytest.approx(n / 4, rel=0.02)
    assert stats.prompts_needed(pilot, effect=0.0) == np.inf
    with pytest.raises(ValueError, match="power"):
        stats.prompts_needed(pilot, power=0.3)


def test_prompts_cannot_buy_what_only_seeds_can():
    rng = np.random.default_rng(4)
    same = rng.normal(0.05, 0.5, (10, 300))  # every seed the same true gain
    spread = same + np.linspace(-0.15, 0.15, 10)[:, None]  # the gain depends on the seed
    # ten seeds share the prompts' work: about a tenth of the one-seed count (the seeds'
    # own spread is estimated from ten means, hence the tolerance)
    one_seed = stats.prompts_needed(same[0], effect=0.05)
    assert stats.prompts_needed(same, effect=0.05) == pytest.approx(one_seed / 10, rel=0.3)
    assert stats.prompts_needed(spread, effect=0.05) == np.inf


def test_std_diff_compares_two_seed_spreads():
    wide, narrow = np.array([0.1, 0.3, 0.5, 0.2, 0.4]), np.array([0.30, 0.31, 0.29, 0.30, 0.31])
    e = stats.std_diff(wide, narrow)
    assert e.mean == pytest.approx(np.std(wide, ddof=1) - np.std(narrow, ddof=1))
    assert e.lo > 0 and stats.verdict(e, "wider", "narrower") == "wider"
    assert stats.std_diff(narrow, wide).hi < 0
    three = stats.std_diff([0.1, 0.2, 0.25], [0.12, 0.2, 0.22])
    assert not three.decided  # three seeds a side cannot tell these spreads apart
    with pytest.raises(ValueError, match="two seeds"):
        stats.std_diff([0.1], [0.2, 0.3])
