"""DPO against RLHF with PPO, compared fairly: equal tuning budgets chosen on a validation
split, the same preference pairs for DPO and for the reward model, gold ties kept or
dropped, dense evaluations with per-prompt scores, so that notebook 09 compares the methods
at matched KL, as paired gains over each seed's own SFT score, with intervals over seeds and
prompts.

    python -m experiments.matched [--quick] [--out DIR] [--task world|sentiment]

1. Tuning (seed 0, validation prompts, final evaluation only). Each method gets the same
   budget: a learning-rate grid of two values times a grid of two values of its KL knob (β
   for DPO, kl_coef for PPO), on each of two data recipes (all pairs, or the pairs whose two
   responses the gold judge does not tie). The best of the eight by final validation gain
   over the SFT model is the method's setting.
2. Final runs (seeds 0, 1, 2, evaluation prompts, disjoint from the validation ones): each
   method at its setting on both recipes, evaluated every few steps; preferred-FT (SFT on
   the chosen responses) and best-of-N (ranked by the same reward model) as baselines; the
   SFT model under five sampling seeds, the noise floor.

Writes ``matched<task>.csv`` (one row per evaluation: means, KL, wall seconds),
``matched<task>_scores.csv`` (gold total per prompt of every evaluation),
``matched<task>_tuning.csv`` and ``matched<task>_runs.csv`` (costs, reward model accuracy).
"""

from __future__ import annotations

import copy
import math
import time
import zlib

import pandas as pd
import torch

from experiments.common import Timer, machine, read_pairs, setup

LR_DPO, BETAS = (1e-4, 5e-4), (0.1, 0.5)
LR_PPO, KL_COEFS = (1e-4, 3e-4), (0.02, 0.2)
RECIPES = ("all pairs", "tie-free")
SEEDS = (0, 1, 2)


def split_prompts(n_val: int, n_eval: int, families, distinct: bool = True):
    """Held-out prompts split by a stable hash of the text: a validation set for tuning and a
    disjoint evaluation set for the reported numbers. ``distinct``: no prompt twice; the
    sentiment task has only 57 distinct held-out prompts, so there a prompt may come back
    (each draw gets its own sampled response)."""
    from dpolab import world
    val, ev, seen = [], [], set()
    for draws, p in enumerate(world.World(0).iter_prompts("eval", families)):
        if draws > 100 * (n_val + n_eval):
            raise ValueError(f"{len(val)} validation and {len(ev)} evaluation prompts after "
                             f"{draws} draws: fewer distinct held-out prompts than asked for")
        if distinct and p.text in seen:
            continue
        seen.add(p.text)
        side = val if zlib.crc32(p.text.encode()) % 3 == 0 else ev
        if (side is val and len(val) < n_val) or (side is ev and len(ev) < n_eval):
            side.append(p)
        if len(val) == n_val and len(ev) == n_eval:
            return val, ev
    raise ValueError("the eval split ran out of prompts")


def recipe(pool: list[dict], name: str, n: int) -> tuple[list[dict], int]:
    """The first ``n`` pairs of ``pool``, or with ``"tie-free"`` the first ``n`` whose two
    responses the gold judge scores differently (a tie's label is a coin flip); and how many
    labelled pairs were used up to get them."""
    if name == "all pairs":
        return pool[:n], n
    kept, used = [], 0
    for used, r in enumerate(pool, 1):
        if r["gold_chosen"] != r["gold_rejected"]:
            kept.append(r)
            if len(kept) == n:
                return kept, used
    raise ValueError(f"only {len(kept)} tie-free pairs in {len(pool)}; {n} needed")


class Evaluator:
    """Scores a policy on fixed prompts with one sampling seed, so that every evaluation of
    every run is paired with every other; keeps the time it spends apart from training's.

    Times are CPU seconds of this process (one torch thread): unlike wall time, they do not
    grow when another process shares the core."""

    def __init__(self, prompts, reference, tok, seed: int = 0):
        self.prompts, self.reference, self.tok, self.seed = prompts, reference, tok, seed
        self.seconds = 0.0

    def __call__(self, policy) -> tuple[dict, list[float]]:
        from dpolab import evaluate
        t0 = time.process_time()
        r = evaluate.evaluate(policy, self.tok, self.prompts, self.reference, seed=self.seed)
        per = r.per_prompt()
        self.seconds += time.process_time() - t0
        row = {"kl": r.kl, "gold": r.scores["total"],
               **{k: r.scores[k] for k in ("helpful", "safe", "instruction", "tone",
                                            "sentiment", "stop_rate") if k in r.scores}}
        return row, per["total"].tolist()


def run_dpo(rows, prompts, lr, beta, steps, batch_size, every, seed, evaluator):
    from dpolab import dpo, model
    policy, tok = model.load(model.SFT)
    points = []

    def record(step: int) -> None:
        if step == 0 or step % every == 0 or step == steps:
            row, scores = evaluator(policy)
            seconds = time.process_time() - t0 - evaluator.seconds if step else 0.0
            points.append((step, seconds, row, scores))

    record(0)
    cfg = dpo.DPOConfig(beta=beta, lr=lr, steps=steps, batch_size=batch_size,
                        reference="precomputed", seed=seed)
    evaluator.seconds = 0.0
    t0 = time.process_time()
    dpo.train_dpo(policy, tok, rows, cfg, ref_model=evaluator.reference,
                  callback=lambda step, h: record(step))
    return points


def run_ppo(rm, prompts, lr, kl_coef, updates, every, seed, evaluator, families):
    from dpolab import model, ppo
    policy, tok = model.load(model.SFT)
    points = []
    state = {"t0": time.process_time()}

    def record(update: int) -> None:
        if update == 0 or update % every == 0 or update == updates:
            row, scores = evaluator(policy)
            seconds = time.process_time() - state["t0"] - evaluator.seconds if update else 0.0
            points.append((update, seconds, row, scores))

    record(0)
    cfg = ppo.PPOConfig(updates=updates, rollout_size=32, minibatch_size=16, ppo_epochs=2,
                        lr=lr, kl_coef=kl_coef, reward="learned", families=families, seed=seed)
    evaluator.seconds = 0.0
    state["t0"] = time.process_time()
    ppo.train_ppo(policy, tok, copy.deepcopy(rm), cfg, reference=evaluator.reference,
                  callback=lambda u, h: record(u))
    return points


def reward_model(rows: list[dict], heldout: list[dict], seed: int = 0):
    """The reward model of the RLHF pipeline on ``rows``; its held-out accuracy, and its
    training cost in wall seconds and in CPU seconds (the unit of every other training time
    here, so that PPO's time to a gain can include it)."""
    from dpolab import reward_model as RM
    rm, tok = RM.from_sft(seed=seed)
    t0 = time.process_time()
    with Timer() as t:
        RM.train_reward_model(rm, tok, rows, RM.RMConfig(batch_size=32, seed=seed))
    cpu = time.process_time() - t0
    return rm, RM.accuracy(RM.score_pairs(rm, tok, heldout)), t.seconds, cpu


def preferred_ft(rows, lr, batch_size, every, seed, evaluator):
    from dpolab import model, sft
    policy, tok = model.load(model.SFT)
    points = []
    row, scores = evaluator(policy)
    points.append((0, 0.0, row, scores))
    evaluator.seconds = 0.0
    t0 = time.process_time()

    def record(step: int, h) -> None:
        if step % every == 0:
            r, s = evaluator(policy)
            points.append((step, time.process_time() - t0 - evaluator.seconds, r, s))

    cfg = sft.SFTConfig(epochs=1, batch_size=batch_size, lr=lr, warmup_steps=0, seed=seed)
    sft.train_sft(policy, tok, [(r["prompt"], r["chosen"]) for r in rows], cfg, callback=record)
    return points


def best_of_n(rm, prompts, ns, seed):
    """Best-of-N from the SFT model ranked by the reward model. Its KL is reported as the
    bound ``log N - (N-1)/N`` (Stiennon et al. 2020; Beirami et al. 2024 show it is an upper
    bound on the true KL)."""
    from dpolab import evaluate, judge, model
    from dpolab import reward_model as RM
    policy, tok = model.load(model.SFT)
    n_max = max(ns)
    gens = evaluate.sample(policy, tok, [p for p in prompts for _ in range(n_max)], seed=seed)
    learned = RM.rewards(rm, tok, [g.prompt for g in gens], [g.response for g in gens])
    gold = torch.tensor([judge.score(g.prompt, g.response, g.finished).total for g in gens])
    learned, gold = learned.view(-1, n_max), gold.view(-1, n_max)
    out = []
    for n in ns:
        per = gold.gather(1, learned[:, :n].argmax(1, keepdim=True)).squeeze(1)
        out.append((n, math.log(n) - (n - 1) / n, per.mean().item(), per.tolist()))
    return out


def main() -> None:
    args = setup(__doc__.splitlines()[0], tasks=("world", "sentiment"))
    from dpolab import model, world, worldprefs
    if args.quick:
        n_val, n_eval, every, updates, ppo_every, n_pairs = 8, 8, 1, 1, 1, 32
        lr_dpo, betas, lr_ppo, kl_coefs, seeds, floor_seeds = LR_DPO[:1], BETAS[:1], \
            LR_PPO[:1], KL_COEFS[:1], SEEDS[:1], (0, 1)
    else:
        n_val, n_eval, every, updates, ppo_every, n_pairs = 128, 256, 5, 12, 2, 640
        lr_dpo, betas, lr_ppo, kl_coefs, seeds, floor_seeds = LR_DPO, BETAS, LR_PPO, KL_COEFS, \
            SEEDS, (0, 1, 2, 3, 4)
    batch_size = 16
    steps = n_pairs // batch_size  # one pass over the pairs
    if args.task == "world":
        families, suffix = world.FAMILIES, ""
        pool = read_pairs("offpolicy_train", 2000)
        heldout = read_pairs("offpolicy_heldout", 8 if args.quick else 200)
    else:
        families, suffix = ("sentiment",), "_sentiment"
        pool = list(worldprefs.offpolicy_pairs(2000, seed=0, families=families))
        heldout = list(worldprefs.offpolicy_pairs(8 if args.quick else 200, seed=0,
                                                  split="eval", families=families))
    val_prompts, eval_prompts = split_prompts(n_val, n_eval, families,
                                              distinct=args.task == "world")
    reference, tok = model.load(model.SFT)
    reference.eval()
    data, labels = {}, {}
    for name in RECIPES:
        data[name], labels[name] = recipe(pool, name, n_pairs)
    ties = sum(r["gold_chosen"] == r["gold_rejected"] for r in pool[:n_pairs]) / n_pairs
    runs = [{"run": f"pairs, {name}", "pairs": len(data[name]), "labels": labels[name],
             "gold_ties": ties if name == "all pairs" else 0.0} for name in RECIPES]

    # The same pairs train DPO and the reward model, recipe by recipe.
    rms = {}
    for name, rows in data.items():
        rm, acc, seconds, cpu = reward_model(rows, heldout)
        rms[name] = rm
        runs.append({"run": f"reward model, {name}", "seconds": round(seconds, 1),
                     "train_seconds": round(cpu, 3), "pairs": len(rows),
                     **{f"rm_{k}": v for k, v in acc.items()}})

    # 1. Tuning on the validation prompts, seed 0, final evaluation only.
    val = Evaluator(val_prompts, reference, tok)
    sft_val = val(model.load(model.SFT)[0])[1]
    tuning = []
    for name, rows in data.items():
        for lr in lr_dpo:
            for beta in betas:
                pts = run_dpo(rows, val_prompts, lr, beta, steps, batch_size, steps, 0, val)
                tuning.append({"method": "DPO", "recipe": name, "lr": lr, "knob": beta,
                               "val_gain": _gain(pts[-1][3], sft_val), "kl": pts[-1][2]["kl"]})
        for lr in lr_ppo:
            for kl_coef in kl_coefs:
                pts = run_ppo(rms[name], val_prompts, lr, kl_coef, updates, updates, 0, val,
                              families)
                tuning.append({"method": "PPO (learned RM)", "recipe": name, "lr": lr,
                               "knob": kl_coef, "val_gain": _gain(pts[-1][3], sft_val),
                               "kl": pts[-1][2]["kl"]})
    tuning = pd.DataFrame(tuning)
    tuning.to_csv(args.out / f"matched{suffix}_tuning.csv", index=False)
    chosen = tuning.loc[tuning.groupby("method").val_gain.idxmax()].set_index("method")

    # 2. Final runs on the evaluation prompts.
    ev = Evaluator(eval_prompts, reference, tok)
    points, scores = [], []

    def keep(method, setting, name, seed, pts, labels):
        for step, seconds, row, per in pts:
            points.append({"method": method, "setting": setting, "recipe": name, "seed": seed,
                           "step": step, "seconds": round(seconds, 3), "labels": labels, **row})
            scores.append({"method": method, "setting": setting, "recipe": name, "seed": seed,
                           "step": step, "scores": " ".join(f"{s:.4g}" for s in per)})

    d, p = chosen.loc["DPO"], chosen.loc["PPO (learned RM)"]
    for seed in seeds:
        for name, rows in data.items():
            with Timer() as t:
                pts = run_dpo(rows, eval_prompts, d.lr, d.knob, steps, batch_size, every,
                              seed, ev)
            keep("DPO", f"lr={d.lr:g} beta={d.knob:g}", name, seed, pts, labels[name])
            runs.append({"run": f"DPO {name} seed={seed}", "seconds": round(t.seconds, 1),
                         "train_seconds": pts[-1][1], "steps": steps})
            with Timer() as t:
                pts = run_ppo(rms[name], eval_prompts, p.lr, p.knob, updates, ppo_every, seed,
                              ev, families)
            keep("PPO (learned RM)", f"lr={p.lr:g} kl_coef={p.knob:g}", name, seed, pts,
                 labels[name])
            runs.append({"run": f"PPO {name} seed={seed}", "seconds": round(t.seconds, 1),
                         "train_seconds": pts[-1][1], "steps": updates})
        best_recipe = d.recipe
        pts = preferred_ft(data[best_recipe], d.lr, batch_size, every, seed, ev)
        keep("preferred-FT", f"lr={d.lr:g}", best_recipe, seed, pts, labels[best_recipe])
        for n, kl, gold, per in best_of_n(rms[p.recipe], eval_prompts, [1, 2, 4, 8], seed):
            points.append({"method": "best-of-N", "setting": f"N={n}", "recipe": p.recipe,
                           "seed": seed, "step": 0, "seconds": 0.0, "labels": labels[p.recipe],
                           "kl": kl, "gold": gold})
            scores.append({"method": "best-of-N", "setting": f"N={n}", "recipe": p.recipe,
                           "seed": seed, "step": 0, "scores": " ".join(f"{s:.4g}" for s in per)})
    for s in floor_seeds:
        row, per = Evaluator(eval_prompts, reference, tok, seed=s)(model.load(model.SFT)[0])
        keep("SFT (noise floor)", f"sampling seed={s}", "-", s, [(0, 0.0, row, per)], 0)

    pd.DataFrame(points).to_csv(args.out / f"matched{suffix}.csv", index=False)
    pd.DataFrame(scores).to_csv(args.out / f"matched{suffix}_scores.csv", index=False)
    runs.append({"run": "settings", "dpo": f"{d.recipe}: lr={d.lr:g} beta={d.knob:g}",
                 "ppo": f"{p.recipe}: lr={p.lr:g} kl_coef={p.knob:g}", "machine": machine(),
                 "val_prompts": len(val_prompts), "eval_prompts": len(eval_prompts)})
    pd.DataFrame(runs).to_csv(args.out / f"matched{suffix}_runs.csv", index=False)
    print(chosen)


def _gain(scores: list[float], base: list[float]) -> float:
    return sum(s - b for s, b in zip(scores, base, strict=True)) / len(base)


if __name__ == "__main__":
    main()
