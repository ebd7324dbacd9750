"""``experiments.matched --quick`` runs end to end and writes what notebook 09 reads: per
evaluation means, per-prompt scores that line up with them, the tuning table and the runs."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dpolab import results

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_mode_writes_paired_per_prompt_scores(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "experiments.matched", "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    points = results.load("matched", tmp_path)
    per = results.prompt_scores(results.load("matched_scores", tmp_path))
    assert len(per) == len(points)
    assert {"DPO", "PPO (learned RM)", "preferred-FT", "best-of-N",
            "SFT (noise floor)"} <= set(points.method)
    assert set(points.recipe) >= {"all pairs", "tie-free"}
    # every trained run starts from the same SFT evaluation: step 0 is paired across runs
    starts = [per[k] for k in per if k[-1] == 0 and k[0] in ("DPO", "PPO (learned RM)")]
    assert all((s == starts[0]).all() for s in starts)
    tuning = pd.read_csv(tmp_path / "matched_tuning.csv")
    assert set(tuning.method) == {"DPO", "PPO (learned RM)"}
    assert tuning.groupby("method").size().nunique() == 1  # the same budget for both
    runs = pd.read_csv(tmp_path / "matched_runs.csv")
    assert runs.loc[runs.run == "pairs, tie-free", "gold_ties"].item() == 0.0
    rm = runs[runs.run.str.startswith("reward model")]
    # the reward model's cost is in CPU seconds, the unit of every training time it is added to
    assert len(rm) == 2 and (rm.train_seconds > 0).all()
