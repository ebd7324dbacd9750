"""Reading experiment results: domination, the frontier, the slider views."""

import matplotlib
import pandas as pd
import pytest

from dpolab import results

matplotlib.use("Agg")


def points(rows):
    return pd.DataFrame(rows, columns=["method", "step", "kl", "gold"])


def test_dominated_fraction_needs_both_axes_strictly():
    p = points([("DPO", 0, 0.0, 0.5), ("DPO", 1, 1.0, 0.8),
                ("PPO (learned RM)", 0, 0.0, 0.5),
                ("PPO (learned RM)", 1, 2.0, 0.7),   # beaten: more KL, less gold
                ("PPO (learned RM)", 2, 0.5, 0.6),   # less KL than any trained DPO point
                ("PPO (learned RM)", 3, 1.0, 0.7)])  # equal KL: not strictly beaten
    assert results.dominated_fraction(p, "PPO (learned RM)", "DPO") == pytest.approx(1 / 3)


def test_a_margin_counts_only_clear_wins():
    p = points([("DPO", 1, 1.0, 0.72), ("PPO (learned RM)", 1, 2.0, 0.70)])
    assert results.dominated_fraction(p, "PPO (learned RM)", "DPO") == 1.0
    assert results.dominated_fraction(p, "PPO (learned RM)", "DPO", margin=0.03) == 0.0


def test_step_zero_is_the_sft_model_and_does_not_count():
    p = points([("DPO", 0, -1.0, 0.9), ("DPO", 1, 1.0, 0.6), ("PPO (learned RM)", 1, 2.0, 0.7)])
    assert results.dominated_fraction(p, "PPO (learned RM)", "DPO") == 0.0


def test_unknown_method_is_a_clear_error():
    p = points([("DPO", 1, 1.0, 0.6)])
    with pytest.raises(ValueError, match="methods present are \\['DPO'\\]"):
        results.dominated_fraction(p, "PPO (learned RM)", "DPO")


def test_pareto_keeps_only_unbeaten_points_sorted_by_kl():
    p = points([("DPO", 1, 1.0, 0.6), ("DPO", 2, 2.0, 0.5), ("DPO", 3, 0.5, 0.4)])
    assert results.pareto(p).kl.tolist() == [0.5, 1.0]


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
    with pytest.raises(FileNotFoundError, match="python -m experiments.frontier"):
        results.load("frontier", tmp_path)
