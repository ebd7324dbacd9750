"""Reading experiment results: the slider views and the matched-KL comparisons."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from dpolab import results

matplotlib.use("Agg")


def test_over_seeds_averages_each_setting_and_counts_its_seeds():
    runs = pd.DataFrame({"beta": [0.1, 0.1, 1.0], "seed": [0, 1, 0], "gold": [0.6, 0.7, 0.5],
                         "kl": [3.0, 1.0, 0.5]})
    s = results.over_seeds(runs, "beta")
    assert s.index.tolist() == [0.1, 1.0] and s.seeds.tolist() == [2, 1]
    assert s.gold.tolist() == pytest.approx([0.65, 0.5])
    assert s.kl_std[0.1] == pytest.approx(2 ** 0.5) and pd.isna(s.kl_std[1.0])
    assert "heldout_accuracy" not in s  # absent metrics are skipped


def test_sweep_view_marks_the_nearest_setting_with_its_mean():
    sweep = pd.DataFrame({"beta": [0.1, 1.0, 1.0], "seed": [0, 0, 1], "gold": [0.6, 0.55, 0.65],
                          "kl": [3.0, 0.5, 0.7], "heldout_accuracy": [0.7, 0.6, 0.6]})
    fig, row = results.sweep_view(sweep, "beta", 0.8)
    assert row.name == 1.0 and row.gold == pytest.approx(0.6) and row.seeds == 2
    assert len(fig.axes) == 3


def test_load_names_the_command_when_results_are_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m experiments.matched"):
        results.load("matched_sentiment_scores", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m experiments.ppo_kl`"):
        results.load("ppo_kl_scores", tmp_path)


def matched_runs(gain_b=0.1):
    """Two methods, two seeds, 50 prompts; both reach KL 2; B gains ``gain_b`` more than A at
    every KL (per prompt, with noise), A gains 0.05 per nat."""
    import numpy as np
    rng = np.random.default_rng(0)
    base = rng.random(50)
    pts, sc = [], []
    for method, extra in (("A", 0.0), ("B", gain_b)):
        for seed in (0, 1):
            for step, kl in enumerate([0.0, 1.0, 2.0]):
                g = base + 0.05 * kl + (extra * kl / 2) + rng.normal(0, 0.01, 50) * (step > 0)
                pts.append({"method": method, "setting": "s", "recipe": "r", "seed": seed,
                            "step": step, "kl": kl, "gold": g.mean(), "seconds": 10.0 * step})
                sc.append({"method": method, "setting": "s", "recipe": "r", "seed": seed,
                           "step": step, "scores": " ".join(f"{x:.6g}" for x in g)})
    for seed in range(3):
        g = base + rng.normal(0, 0.05, 50)
        pts.append({"method": "SFT (noise floor)", "setting": "x", "recipe": "-", "seed": seed,
                    "step": 0, "kl": 0.0, "gold": g.mean(), "seconds": 0.0})
        sc.append({"method": "SFT (noise floor)", "setting": "x", "recipe": "-", "seed": seed,
                   "step": 0, "scores": " ".join(f"{x:.6g}" for x in g)})
    return pd.DataFrame(pts), results.prompt_scores(pd.DataFrame(sc))


def test_gains_are_interpolated_at_a_matched_kl():
    points, per = matched_runs()
    g = results.gains_at_kl(points, per, "A", "r", 1.5)  # halfway between KL 1 and KL 2
    assert g.shape == (2, 50) and g.mean() == pytest.approx(0.075, abs=0.005)
    assert results.gains_at_kl(points, per, "A", "r", 2.5) is None  # never reached
    with pytest.raises(ValueError, match="no runs of 'C'"):
        results.gains_at_kl(points, per, "C", "r", 1.0)


def test_matched_kl_decides_only_what_the_interval_allows():
    points, per = matched_runs(gain_b=0.1)
    t = results.matched_kl(points, per, [1.0, 2.0, 3.0], ("A", "r"), ("B", "r"))
    assert list(t.KL) == [1.0, 2.0]  # KL 3 was never reached
    assert list(t.verdict) == ["B ahead", "B ahead"]
    assert t["diff"].iloc[1].mean == pytest.approx(0.1, abs=0.01)
    same = results.matched_kl(*matched_runs(gain_b=0.0), [1.0], ("A", "r"), ("B", "r"))
    assert same.verdict.iloc[0] == "within noise"


def test_noise_floor_and_seconds_to_a_gain():
    points, per = matched_runs()
    floor = results.noise_floor(points, per)
    assert floor["seeds"] == 3 and 0 < floor["std"] < 0.05 and floor["paired_half_width"] > 0
    # A gains 0.05 per nat and one nat per 10 s: 0.075 is reached at 15 s
    assert results.seconds_to_gain(points, per, "A", "r", 0.075) == pytest.approx([15, 15], abs=1)
    assert all(np.isnan(s) for s in results.seconds_to_gain(points, per, "A", "r", 1.0))


def test_gain_points_and_the_share_of_points_beaten():
    points, per = matched_runs(gain_b=0.1)
    g = results.gain_points(points, per)
    b = g[g.method == "B"].set_index("step")
    assert b.gain[0] == 0 and b.gain[2] == pytest.approx(0.2, abs=0.01)  # 0.05*2 + 0.1
    # every trained A point (KL 1, 2) is beaten by B's KL-1 point only where B has less KL
    assert results.beaten_share(g, "A", "B") == pytest.approx(0.5)
    assert results.beaten_share(g, "A", "B", margin=0.2) == 0.0
    gains = results.final_gains(points, per, "B", "r")
    assert gains.shape == (2, 50) and gains.mean() == pytest.approx(0.2, abs=0.01)


def test_score_matrix_and_paired_differences_over_seeds_and_prompts():
    rng = np.random.default_rng(0)
    long = pd.DataFrame([{"loss": loss, "seed": s, "prompt": p, "flip": 0.2,
                          "gold": base + (0.1 if loss == "B" else 0.0) + 0.01 * rng.normal()}
                         for s in range(3) for p, base in enumerate(rng.uniform(0, 1, 40))
                         for loss in ("A", "B")])
    m = results.score_matrix(long, "gold", loss="A", flip=0.2)
    assert m.shape == (3, 40)
    d = results.paired(long, {"loss": "A"}, {"loss": "B"})
    assert d.mean == pytest.approx(0.1, abs=0.01) and d.lo > 0.05
    assert results.mean_over(long, "gold", "prompt", loss="B").decided
    with pytest.raises(ValueError, match="no rows match"):
        results.score_matrix(long, "gold", loss="C")


def test_gold_agreement_counts_untied_pairs_and_ignores_a_constant_per_prompt():
    rng = np.random.default_rng(1)
    gold_c, gold_r = rng.integers(0, 3, 200) / 2, rng.integers(0, 3, 200) / 2
    offset = rng.normal(0, 5, 200)  # a different constant per prompt: must not matter
    rows = [{"seed": s, "pair": i, "gold_chosen": gold_c[i], "gold_rejected": gold_r[i],
             "r_chosen": gold_c[i] + offset[i], "r_rejected": gold_r[i] + offset[i]}
            for s in range(2) for i in range(200)]
    perfect = results.gold_agreement(pd.DataFrame(rows), n_boot=50)
    assert perfect["pair agreement"].mean == 1.0
    assert perfect["pair agreement"].n == 2 * int((gold_c != gold_r).sum())
    assert perfect["rank correlation"].mean == pytest.approx(1.0, abs=0.01)  # float ties
    flipped = pd.DataFrame(rows).rename(columns={"r_chosen": "r_rejected",
                                                 "r_rejected": "r_chosen"})
    worst = results.gold_agreement(flipped, n_boot=50)
    assert worst["pair agreement"].mean == 0.0 and worst["rank correlation"].mean < -0.99
