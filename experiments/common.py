"""What every experiment shares: the command line, the data, one DPO run, one PPO run.

A run returns one row per held-out evaluation (gold reward per axis, sampled KL to the
reference in nats per response, wall seconds since the start of training, evaluations
included, the same for every method)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def setup(description: str, tasks: tuple[str, ...] = (), threads: int = 1) -> argparse.Namespace:
    """Parse ``--quick``/``--out`` and pin torch to ``threads`` threads (the tiny model: one;
    two threads on a shared 2-core machine are many times slower than one)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for CSV and PNG")
    if tasks:
        parser.add_argument("--task", choices=tasks, default=tasks[0])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch "
            f"{torch.__version__}, {torch.get_num_threads()} thread")


def read_pairs(name: str, n: int, skip: int = 0) -> list[dict]:
    """Rows ``skip .. skip+n`` of ``data/prefs/<name>.jsonl``."""
    path = ROOT / "data" / "prefs" / f"{name}.jsonl"
    with path.open() as f:
        rows = [json.loads(line) for line in f]
    if len(rows) < skip + n:
        raise ValueError(f"{path.name} has {len(rows)} rows, {skip + n} needed")
    return rows[skip:skip + n]


def eval_prompts(n: int, families: tuple[str, ...] | None = None):
    """``n`` held-out prompts over ``families`` (default all five: the full world)."""
    from dpolab import world
    return world.World(0).prompts(n, "eval", families or world.FAMILIES)


def heldout_metrics(policy, reference, tok, rows: list[dict], average: bool = False,
                    reference_free: bool = False) -> dict[str, float]:
    """On held-out pairs: the share whose implicit reward margin is positive (the trained
    policy's preference agrees with the label), and how far training moved the log-probs of
    chosen and rejected responses (negative chosen shift: likelihood displacement, Razin et
    al. 2024). Log-probs in the unit the loss trains on: summed over the response, or the
    per-token mean with ``average`` (SimPO, ORPO)."""
    from dpolab import dpo, pairs
    examples, _ = pairs.encode_pairs(tok, rows)
    pol = dpo.precompute_ref_logps(policy, examples, tok.pad_token_id, 64, average)
    ref = dpo.precompute_ref_logps(reference, examples, tok.pad_token_id, 64, average)
    h = (pol[:, 0] - pol[:, 1]) if reference_free else \
        (pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1])
    return {"heldout_accuracy": (h > 0).float().mean().item(),
            "chosen_logp_shift": (pol[:, 0] - ref[:, 0]).mean().item(),
            "rejected_logp_shift": (pol[:, 1] - ref[:, 1]).mean().item()}


def run_dpo(rows: list[dict], cfg, prompts, heldout: list[dict] | None = None,
            policy=None, **labels) -> tuple[list[dict], object]:
    """Train ``policy`` (default: a fresh SFT model) with ``cfg`` (a ``DPOConfig``) on ``rows``,
    against the SFT model as reference; one row per evaluation, the last one with the
    ``heldout_metrics``. Returns (rows, trained policy)."""
    from dpolab import dpo, model, variants
    fresh, tok = model.load(model.SFT)
    policy = fresh if policy is None else policy
    reference = model.load(model.SFT)[0].eval()
    seconds = {}
    h = dpo.train_dpo(policy, tok, rows, cfg, ref_model=reference, eval_prompts=prompts,
                      callback=lambda step, hist: seconds.__setitem__(step, hist.seconds))
    seconds[0] = 0.0
    acc = {t["step"]: t["rewards/accuracies"] for t in h.train}
    out = [{**labels, "step": e["step"], "pairs_seen": e["step"] * cfg.batch_size,
            "seconds": round(seconds[e["step"]], 2), "kl": e["kl"], "gold": e["total"],
            **{k: e[k] for k in ("helpful", "safe", "instruction", "tone", "sentiment",
                                 "stop_rate") if k in e},
            "train_accuracy": acc.get(e["step"], float("nan"))} for e in h.eval]
    if heldout:
        out[-1].update(heldout_metrics(policy, reference, tok, heldout, cfg.average_logps,
                                       cfg.loss_type.split("(")[0] in variants.REFERENCE_FREE))
    return out, policy


def run_ppo(reward_model, cfg, prompts, **labels) -> list[dict]:
    """PPO from the SFT model with ``cfg`` (a ``PPOConfig``); one row per evaluation."""
    from dpolab import model, ppo
    policy, tok = model.load(model.SFT)
    reference = model.load(model.SFT)[0].eval()
    seconds = {0: 0.0}
    h = ppo.train_ppo(policy, tok, reward_model, cfg, reference=reference, eval_prompts=prompts,
                      callback=lambda u, hist: seconds.__setitem__(u, hist.seconds))
    return [{**labels, "step": e["update"], "samples_seen": e["update"] * cfg.rollout_size,
             "seconds": round(seconds[e["update"]], 2), "kl": e["kl"], "gold": e["total"],
             **{k: e[k] for k in ("helpful", "safe", "instruction", "tone", "sentiment",
                                  "stop_rate") if k in e}} for e in h.eval]


class Timer:
    """Wall seconds of a block, for the record of what a full run cost."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
