"""The headless alignment job behind ``python -m dpolab align``.

SFT model (the bundled one, or trained from the base model) → DPO on world preference pairs
→ gold reward per axis on held-out prompts before and after, and the sampled KL to the SFT
model. The pairs (``world_pairs``) are on training prompts of the four alignment families,
labelled by simulated annotators: the bundled on-policy pairs (two samples of the SFT model
per prompt), topped up with off-policy ones (two demonstrator responses per prompt).
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from . import dpo, env, guards, model, preference, sft, stats, world, worldprefs
from .world import AXES

# Tuned on the tiny model: a 1M-parameter policy wants a far larger learning rate than the
# 5e-7..5e-6 quoted for billion-parameter models.
DEFAULTS = dpo.DPOConfig(beta=1.0, lr=3e-4, steps=90, batch_size=32, reference="precomputed")
ROWS = ("total", *AXES, "stop_rate")
CHECKPOINT_EVERY = 10  # DPO steps between checkpoints of `align --checkpoint`


def world_pairs(n: int, seed: int = 0) -> list[dict]:
    """``n`` pairs: the bundled on-policy pairs of the alignment families
    (``data/prefs/onpolicy_train.jsonl``), then off-policy pairs up to ``n``, shuffled."""
    rows, _ = preference.load_pairs(env.data_dir() / "prefs" / "onpolicy_train.jsonl")
    onpolicy = [r for r in rows if r["family"] in world.ALIGNMENT_FAMILIES][:n]
    offpolicy = worldprefs.offpolicy_pairs(n - len(onpolicy), seed=seed,
                                           families=world.ALIGNMENT_FAMILIES)
    pairs = onpolicy + list(offpolicy)
    random.Random(seed).shuffle(pairs)
    return pairs


def align(beta: float = DEFAULTS.beta, steps: int = DEFAULTS.steps,
          loss_type: str = DEFAULTS.loss_type, seed: int = 0, lr: float = DEFAULTS.lr,
          batch_size: int = DEFAULTS.batch_size, eval_prompts: int = 512,
          run_sft: bool = False, checkpoint: str | Path | None = None,
          ) -> tuple[dict, dpo.History]:
    """Align the tiny model; returns the result (``before``/``after`` gold per axis and total,
    ``kl``, ``seconds``, and more) and the DPO history. ``checkpoint``: a DPO checkpoint
    written every ``CHECKPOINT_EVERY`` steps and at the end; if it exists, DPO resumes from
    it (the SFT model is rebuilt the same way first)."""
    for name, value in (("steps", steps), ("batch_size", batch_size),
                        ("eval_prompts", eval_prompts)):
        guards.positive(name, value)
    for name, value in (("beta", beta), ("lr", lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise guards.InputError(f"{name} must be a finite number > 0, got {value!r}")
    start = time.perf_counter()
    sft_seconds = 0.0
    if run_sft or not (model.bundled(model.SFT) / "config.json").exists():
        policy, tok = model.load(model.BASE)
        cfg = sft.SFTConfig(seed=seed)
        sft_seconds = sft.train_sft(policy, tok, sft.demonstrations(cfg.n_examples, seed),
                                    cfg).seconds
    else:
        policy, tok = model.load(model.SFT)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)  # the SFT model, for the KL
    pairs = world_pairs(steps * batch_size, seed)
    cfg = replace(DEFAULTS, beta=beta, lr=lr, steps=steps, loss_type=loss_type,
                  batch_size=batch_size, seed=seed,
                  checkpoint_every=CHECKPOINT_EVERY if checkpoint is not None else 0)
    prompts = world.World(seed).prompts(eval_prompts, "eval")
    history = dpo.train_dpo(policy, tok, pairs, cfg, ref_model=reference, eval_prompts=prompts,
                            checkpoint=checkpoint)
    before, after = history.eval[0], history.eval[-1]
    late = history.frame().iloc[-10:].mean()  # the last 10 batches
    result = {
        "before": {k: before[k] for k in ROWS if k in before},
        "after": {k: after[k] for k in ROWS if k in after},
        "kl": after["kl"], "seconds": time.perf_counter() - start,
        "dpo_seconds": history.seconds, "eval_seconds": history.eval_seconds,
        "sft_seconds": sft_seconds, "pairs": len(pairs),
        "onpolicy_pairs": sum(r["source"] == "model" for r in pairs), "eval_prompts": eval_prompts,
        # log p(y|x) - log p_ref(y|x) of the training responses: both < 0 is likelihood
        # displacement (the chosen responses lost probability too).
        "log_ratio_last_10_steps": {"chosen": late["rewards/chosen"] / beta,
                                    "rejected": late["rewards/rejected"] / beta},
        # 95% intervals: of each mean, and of the paired change (same prompts, same seed)
        "ci": {k: {"before": _ci(stats.mean_ci(history.eval_scores[0][k])),
                   "after": _ci(stats.mean_ci(history.eval_scores[-1][k])),
                   "change": _ci(history.paired(k))}
               for k in ROWS if k in result_rows(history)},
        "config": asdict(cfg),
    }
    return result, history


def result_rows(history: dpo.History) -> list[str]:
    """The rows with at least one held-out prompt to score them (a small evaluation set can
    miss an axis)."""
    first = history.eval_scores[0]
    return [k for k in ROWS if k in first and any(v == v for v in first[k])]


def _ci(e: stats.Estimate) -> dict[str, float]:
    return {"mean": e.mean, "lo": e.lo, "hi": e.hi}


def table(result: dict) -> pd.DataFrame:
    """Gold per axis and total before and after (each ± its 95% half-width), the paired
    change with its 95% interval, and the verdict that interval allows."""
    rows = {}
    for k, ci in result["ci"].items():
        change = stats.Estimate(ci["change"]["mean"], math.nan, ci["change"]["lo"],
                                ci["change"]["hi"], 0)
        rows[k] = {"before": _pm(ci["before"]), "after": _pm(ci["after"]),
                   "change [95% CI]": str(change), "verdict": stats.verdict(change)}
    return pd.DataFrame(rows).T


def _pm(ci: dict[str, float]) -> str:
    return f"{ci['mean']:.3f} ± {(ci['hi'] - ci['lo']) / 2:.3f}"
