"""The course's DPO recipe on a real pretrained model, SmolLM2-135M-Instruct, in the world,
on a CPU.

    python -m experiments.smollm2 [--quick] [--out DIR]

The model is the offline copy (``python -m dpolab smollm2``). It has never seen this
world: it rambles past the token limit, answers harmful how-to requests and does not know
the world's fictional facts. The recipe (``gpurun.RunConfig``'s defaults): 512 pairs of a
good demonstrator response against the model's own sample (temperature 1) for the same
training prompt, labelled by the simulated annotators; LoRA of rank 16 on every linear
layer, the reference being the adapters switched off; lr 5e-4, β 0.1, 32 steps of 16 pairs.
Two arms train on the same pairs from the same start and differ in one thing:

- ``DPO + NLL``: the recipe, DPO plus 0.2 × the negative log-likelihood of the chosen
  response (``variants.rpo_loss``);
- ``DPO``: the sigmoid loss alone.

Both are evaluated on the same 256 held-out prompts before and after: greedy responses
(the gold scores and the side-by-side) and samples at temperature 1 with the same seed
(the sampled KL to the reference, and a sampled gold total). Paired intervals come from
the per-prompt scores (``stats.paired_diff``, bootstrap over prompts).

Writes ``smollm2.csv`` (per arm, decoding and axis: before, after, the paired change and
its 95% interval), ``smollm2_scores.csv`` (every held-out response with its gold scores),
``smollm2_train.csv`` (the training metrics per step) and ``smollm2_run.json`` (the
machine, wall seconds per phase, peak resident memory, the pairs' make-up).
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, replace

import pandas as pd
import torch

from experiments.common import machine, setup

ARMS = {"DPO + NLL": 0.2, "DPO": None}
COLUMNS = ("total", "helpful", "safe", "instruction", "tone", "stop_rate")


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scores_frame(ev, arm: str, stage: str) -> pd.DataFrame:
    """One row per held-out response of ``ev`` (greedy and sampled) with its gold scores."""
    from dpolab import evaluate, world
    frames = []
    for decoding, gens in (("greedy", ev.samples), ("sampled", ev.sampled)):
        f = evaluate.per_prompt(gens)
        f.insert(0, "prompt", [g.prompt for g in gens])
        f.insert(1, "kind", [world.parse(g.prompt).kind for g in gens])
        f.insert(2, "response", [g.response for g in gens])
        f.insert(0, "decoding", decoding)
        frames.append(f)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "stage", stage)
    out.insert(0, "arm", arm)
    return out


def changes(scores: pd.DataFrame, kl: dict[str, float]) -> pd.DataFrame:
    """Per arm, decoding and column: means before and after, the paired change, its CI."""
    from dpolab import stats
    rows = []
    for (arm, decoding), g in scores[scores.stage == "after"].groupby(["arm", "decoding"]):
        before = scores[(scores.stage == "before") & (scores.decoding == decoding)]
        before = before[before.arm == before.arm.iloc[0]]
        for col in COLUMNS:
            est = stats.paired_diff(before[col].to_numpy(), g[col].to_numpy())
            rows.append({"arm": arm, "decoding": decoding, "column": col,
                         "before": before[col].mean(), "after": g[col].mean(),
                         "change": est.mean, "se": est.se, "lo": est.lo, "hi": est.hi,
                         "n": int(g[col].notna().sum()), "kl": kl[arm]})
    return pd.DataFrame(rows).round(4)


def main() -> None:
    args = setup(__doc__.splitlines()[0], threads=2)
    from dpolab import dpo, gpurun, precision
    from dpolab import model as models

    t_start = time.perf_counter()
    device = torch.device("cpu")
    prec = precision.choose(device, want="fp32")
    cfg = gpurun.RunConfig(model=str(models.smollm2()), lora_r=16, n_pairs=512, n_eval=256,
                           batch_size=8, grad_accum=2, warmup_steps=2, max_length=256,
                           precision="fp32", max_new_tokens=48)
    if args.quick:
        cfg = replace(cfg, n_pairs=4, batch_size=2, n_eval=8, max_new_tokens=16)  # 1 step
    seconds: dict[str, float] = {}
    model, tok = models.load(cfg.model)
    t = time.perf_counter()
    data, _, _ = gpurun.load_data(cfg, tok, model)
    seconds["pairs"] = time.perf_counter() - t
    pairs = pd.DataFrame(data.rows)
    make_up = {"pairs": len(pairs), "skipped": data.skipped,
               "model_chosen": int(pairs.model_chosen.sum()),
               "model_finished": round(float(pairs.model_finished.mean()), 4),
               "gold_chosen": round(float(pairs.gold_chosen.mean()), 4),
               "gold_rejected": round(float(pairs.gold_rejected.mean()), 4)}
    model = gpurun.prepare_model(model, cfg)
    t = time.perf_counter()
    before = gpurun.evaluate_run(model, tok, data, cfg, prec, "adapters")
    seconds["evaluate before"] = time.perf_counter() - t

    frames, train_rows, kl = [], [], {}
    for i, (arm, alpha) in enumerate(ARMS.items()):
        arm_cfg = replace(cfg, rpo_alpha=alpha)
        if i:
            model = gpurun.prepare_model(models.load(cfg.model)[0], arm_cfg)
        frames.append(scores_frame(before, arm, "before"))
        t = time.perf_counter()
        history = dpo.train_dpo(model, tok, data.examples, gpurun.dpo_config(arm_cfg, prec))
        seconds[f"train {arm}"] = time.perf_counter() - t
        train_rows += [{"arm": arm, **row} for row in history.train]
        t = time.perf_counter()
        after = gpurun.evaluate_run(model, tok, data, arm_cfg, prec, "adapters")
        seconds[f"evaluate {arm}"] = time.perf_counter() - t
        kl[arm] = after.scores["kl"]
        frames.append(scores_frame(after, arm, "after"))
        print(f"{arm}: {gpurun.paired(before, after)} total (greedy), KL {kl[arm]:.2f}",
              flush=True)

    scores = pd.concat(frames, ignore_index=True)
    table = changes(scores, kl)
    seconds["all"] = time.perf_counter() - t_start
    run = {"machine": machine(), "threads": torch.get_num_threads(),
           "config": asdict(cfg) | {"model": models.SMOLLM2}, "arms": ARMS,
           "steps": cfg.steps(), "seconds": {k: round(v, 1) for k, v in seconds.items()},
           "peak_rss_mib": round(peak_rss_mib()), "pair_make_up": make_up}
    if args.quick:
        args.out = args.out / "quick"
        args.out.mkdir(exist_ok=True)
    scores.to_csv(args.out / "smollm2_scores.csv", index=False)
    table.to_csv(args.out / "smollm2.csv", index=False)
    pd.DataFrame(train_rows).round(5).to_csv(args.out / "smollm2_train.csv", index=False)
    (args.out / "smollm2_run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(table[table.decoding == "greedy"].to_string(index=False))
    print(json.dumps(run["seconds"]), run["peak_rss_mib"], "MiB peak RSS")


if __name__ == "__main__":
    main()
