"""Each experiment's --quick mode runs end to end in a temporary folder and writes its CSV
(with the columns the notebooks read) and its figure."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {
    "sweeps": {"sweep", "beta", "lr", "step", "gold", "kl", "heldout_accuracy", "epoch"},
    "variants": {"experiment", "loss_type", "flip", "gold", "kl", "heldout_accuracy",
                 "chosen_logp_shift", "rejected_logp_shift", "response_tokens", "labels_used"},
    "compare": {"quantity", "DPO", "PPO"},
}


def run(name: str, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", f"experiments.{name}", "--quick", "--out",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COLUMNS))
def test_quick_mode_writes_csv_and_figure(name, out):
    run(name, out)
    table = pd.read_csv(out / f"{name}.csv")
    assert COLUMNS[name] <= set(table.columns), COLUMNS[name] - set(table.columns)
    assert len(table) > 1
    if "gold" in table:
        assert table.gold.notna().any()
    assert (out / f"{name}.png").stat().st_size > 10_000


PER_ITEM = {  # the per-prompt and per-pair files next to each CSV, and their columns
    "sweeps_prompts": {"sweep", "beta", "lr", "seed", "step", "prompt", "gold"},
    "variants_prompts": {"experiment", "loss_type", "flip", "labels_used", "seed", "step",
                         "prompt", "gold", "tokens"},
    "variants_pairs": {"loss_type", "seed", "pair", "chosen_shift", "rejected_shift",
                       "chosen_shift_per_token", "rejected_shift_per_token"},
    "variants_rewards": {"model", "seed", "pair", "r_chosen", "r_rejected", "gold_chosen",
                         "gold_rejected"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PER_ITEM))
def test_quick_mode_writes_per_prompt_and_per_pair_scores(name, out):
    if not (out / f"{name.split('_')[0]}.csv").exists():
        run(name.split("_")[0], out)
    table = pd.read_csv(out / f"{name}.csv")
    assert PER_ITEM[name] <= set(table.columns), PER_ITEM[name] - set(table.columns)
    assert len(table) > 1


@pytest.mark.slow
def test_ppo_kl_quick_mode_pairs_both_coefficients_prompt_by_prompt(tmp_path):
    """Both KL coefficients, every evaluation with its per-prompt scores, whose means are
    the evaluation's."""
    run("ppo_kl", tmp_path)
    evals = pd.read_csv(tmp_path / "ppo_kl.csv")
    scores = pd.read_csv(tmp_path / "ppo_kl_scores.csv")
    assert set(evals.kl_coef) == {0.15, 0.002} and set(evals.seed) == {0, 1}
    per_eval = scores.groupby(["kl_coef", "seed", "step"])
    assert (per_eval.prompt.nunique() == 16).all()
    means = evals.set_index(["kl_coef", "seed", "step"]).sort_index()
    pd.testing.assert_series_equal(per_eval.gold.mean(), means.total, check_names=False,
                                   atol=1e-3)
    pd.testing.assert_series_equal(per_eval.learned.mean(), means.learned, check_names=False,
                                   atol=1e-3)
