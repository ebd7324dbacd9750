"""The reward–KL frontier (Rafailov et al. 2023, Figure 2, in miniature) on the full world.

Every method starts from the SFT model; every point is one held-out evaluation:
(sampled KL to the SFT model, mean gold reward). Methods: DPO at several beta, PPO with the
learned reward model at several KL coefficients, PPO with the gold reward, preferred-FT
(SFT on the chosen responses only) and best-of-N sampling from the SFT model (ranked by the
learned reward model; its KL is reported as log N - (N-1)/N, an upper bound).

    python -m experiments.frontier [--quick] [--out DIR] [--task world|sentiment]

Writes ``frontier.csv`` (one row per point), ``frontier_runs.csv`` (reward model accuracy and
run costs) and ``frontier.png``; with ``--task sentiment`` (the DPO paper's own task: review
continuations, gold = share of positive words), ``frontier_sentiment*``. Trained methods run
with three seeds.
"""

from __future__ import annotations

import copy
import time

import pandas as pd

from experiments.common import Timer, eval_prompts, machine, read_pairs, run_dpo, run_ppo, setup


def reward_model(rows: list[dict], heldout: list[dict]):
    """The learned reward model of the RLHF pipeline, and its held-out accuracy."""
    from dpolab import reward_model as RM
    rm, tok = RM.from_sft()
    RM.train_reward_model(rm, tok, rows, RM.RMConfig(batch_size=32))
    return rm, RM.accuracy(RM.score_pairs(rm, tok, heldout))


def preferred_ft(rows: list[dict], prompts, lr: float, batch_size: int, eval_every: int,
                 seed: int) -> list[dict]:
    """SFT on the chosen responses only: the supervised baseline of the DPO paper."""
    from dpolab import evaluate, model, sft
    policy, tok = model.load(model.SFT)
    reference = model.load(model.SFT)[0].eval()
    points = []

    def point(step: int, seconds: float) -> None:
        r = evaluate.evaluate(policy, tok, prompts, reference, seed=seed)
        points.append({"method": "preferred-FT", "setting": f"lr={lr:g}", "seed": seed,
                       "step": step, "seconds": round(seconds, 2), "kl": r.kl,
                       "gold": r.scores["total"]})
        policy.train()

    point(0, 0.0)
    t0 = time.perf_counter()
    examples = [(r["prompt"], r["chosen"]) for r in rows]
    cfg = sft.SFTConfig(epochs=1, batch_size=batch_size, lr=lr, warmup_steps=0, seed=seed)
    sft.train_sft(policy, tok, examples, cfg, callback=lambda s, h: s % eval_every == 0
                  and point(s, time.perf_counter() - t0))
    return points


def best_of_n(rm, prompts, ns: list[int], seed: int) -> list[dict]:
    """Best-of-N from the SFT model, ranked by the reward model, scored by the gold judge
    (``experiments.matched.best_of_n``); its KL is the bound ``log N - (N-1)/N``."""
    from experiments.matched import best_of_n as draw
    return [{"method": "best-of-N", "setting": f"N={n}", "seed": seed, "step": 0, "seconds": 0.0,
             "kl": kl, "gold": gold} for n, kl, gold, _ in draw(rm, prompts, ns, seed)]


def plot(points: pd.DataFrame, path, task: str = "world") -> None:
    import matplotlib
    matplotlib.use("Agg")
    from dpolab import results
    fig = results.plot_frontier(points, title=f"Reward–KL frontier, {task} task, held-out prompts")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    args = setup(__doc__.splitlines()[0], tasks=("world", "sentiment"))
    from dpolab import dpo, ppo, results, world, worldprefs
    if args.quick:
        n_prompts, seeds, betas, kl_coefs = 8, [0], [0.5], [0.1]
        steps, eval_every, updates, ppo_eval, rm_pairs, bon = 2, 1, 1, 1, 64, [1, 2]
    else:
        n_prompts, seeds, betas, kl_coefs = 96, [0, 1, 2], [0.1, 0.5, 2.0], [0.02, 0.2]
        steps, eval_every, updates, ppo_eval, rm_pairs, bon = 24, 8, 12, 4, 640, [1, 2, 4, 8]
    batch_size, lr = 16, 5e-4
    if args.task == "world":
        families, suffix = world.FAMILIES, ""
        train = read_pairs("offpolicy_train", steps * batch_size)
        rm_rows = read_pairs("offpolicy_train", rm_pairs, skip=1000)
        heldout = read_pairs("offpolicy_heldout", 4 if args.quick else 200)
    else:
        families, suffix = ("sentiment",), "_sentiment"
        train = worldprefs.offpolicy_pairs(steps * batch_size, seed=0, families=families)
        rm_rows = worldprefs.offpolicy_pairs(rm_pairs, seed=1, families=families)
        heldout = worldprefs.offpolicy_pairs(4 if args.quick else 200, seed=0, split="eval",
                                             families=families)
    prompts = eval_prompts(n_prompts, families)
    rows, runs = [], []

    with Timer() as t:
        rm, rm_acc = reward_model(rm_rows, heldout)
    runs.append({"run": "reward model", "seconds": round(t.seconds, 1), "pairs": rm_pairs,
                 **{f"rm_{k}": v for k, v in rm_acc.items()}})
    for seed in seeds:
        for beta in betas:
            cfg = dpo.DPOConfig(beta=beta, lr=lr, steps=steps, batch_size=batch_size,
                                reference="precomputed", eval_every=eval_every, seed=seed)
            with Timer() as t:
                pts, _ = run_dpo(train, cfg, prompts, method="DPO", setting=f"beta={beta:g}",
                                 seed=seed)
            rows += pts
            runs.append({"run": f"DPO beta={beta:g} seed={seed}", "seconds": round(t.seconds, 1)})
    ppo_runs = [("PPO (learned RM)", k, "learned", s) for s in seeds for k in kl_coefs]
    ppo_runs += [("PPO (gold reward)", kl_coefs[0], "gold", s) for s in seeds]
    for method, kl_coef, reward, seed in ppo_runs:
        cfg = ppo.PPOConfig(updates=updates, rollout_size=32, minibatch_size=16, ppo_epochs=2,
                            lr=3e-4, kl_coef=kl_coef, reward=reward, families=families,
                            eval_every=ppo_eval, seed=seed)
        with Timer() as t:
            rows += run_ppo(copy.deepcopy(rm), cfg, prompts, method=method,
                            setting=f"kl_coef={kl_coef:g}", seed=seed)
        runs.append({"run": f"{method} kl_coef={kl_coef:g} seed={seed}",
                     "seconds": round(t.seconds, 1)})
    for seed in seeds:
        with Timer() as t:
            rows += preferred_ft(train, prompts, lr, batch_size, eval_every, seed)
        runs.append({"run": f"preferred-FT seed={seed}", "seconds": round(t.seconds, 1)})
        with Timer() as t:
            rows += best_of_n(rm, prompts, bon, seed)
        runs.append({"run": f"best-of-N seed={seed}", "seconds": round(t.seconds, 1)})

    points = pd.DataFrame(rows)
    points.to_csv(args.out / f"frontier{suffix}.csv", index=False)
    frac = results.dominated_fraction(points, "PPO (learned RM)", "DPO")
    runs.append({"run": "summary", "dominated_fraction": frac, "machine": machine()})
    pd.DataFrame(runs).to_csv(args.out / f"frontier{suffix}_runs.csv", index=False)
    plot(points, args.out / f"frontier{suffix}.png", args.task)
    print(f"PPO (learned RM) points beaten by some DPO point on both axes: {frac:.0%}")


if __name__ == "__main__":
    main()
