"""PPO's KL coefficient, and nothing else, changed: reward hacking at equal length.

    python -m experiments.ppo_kl [--quick] [--out DIR]

PPO from the SFT model against the bundled reward model, as in ``ppo_seeds``, for the same
60 updates at two KL coefficients: the default (``PPOConfig().kl_coef``, 0.15) and 0.002,
the small one of notebook 04's reward-hacking run, seeds 0, 1, 2. Every 4 updates the
policy samples on the same 200 held-out prompts with its seed's sampling seed; the learned
reward and the gold total of each sample are kept per prompt, so a change between two
evaluations of a run is paired prompt by prompt, and the interval is a bootstrap over seeds
and prompts (``stats.paired_diff``).

Writes ``ppo_kl.csv`` (one row per evaluation: means, KL) and ``ppo_kl_scores.csv`` (per
prompt: gold total and learned reward), and ``ppo_kl_runs.csv`` (CPU seconds per run).
Two processes, one per core: ``--kl-coef`` runs one coefficient and writes
``ppo_kl_<coef>*.csv``, and ``--merge`` then joins those into the three files; without
either, both coefficients run one after the other.
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from experiments.common import machine, setup

SEEDS = (0, 1, 2)
HACKING_KL = 0.002
FILES = ("", "_scores", "_runs")


def merge(out) -> None:
    """Join the ``--kl-coef`` runs' files into ``ppo_kl.csv``, ``_scores`` and ``_runs``."""
    for part in FILES:
        paths = sorted(out.glob(f"ppo_kl_[0-9]*{part}.csv"))
        paths = [p for p in paths if p.stem.count("_") == 2 + bool(part)]
        pd.concat([pd.read_csv(p) for p in paths]).to_csv(out / f"ppo_kl{part}.csv",
                                                          index=False)
        for p in paths:
            p.unlink()


def main() -> None:
    command = " ".join(sys.argv[1:])
    kl_arg = None
    if "--kl-coef" in sys.argv:
        at = sys.argv.index("--kl-coef")
        kl_arg = float(sys.argv[at + 1])
        del sys.argv[at:at + 2]
    merging = "--merge" in sys.argv
    if merging:
        sys.argv.remove("--merge")
    args = setup(__doc__.splitlines()[0])
    if merging:
        merge(args.out)
        return
    from dpolab import model, ppo, world
    from dpolab import reward_model as RM

    default = ppo.PPOConfig().kl_coef
    coefs = (kl_arg,) if kl_arg is not None else (default, HACKING_KL)
    if args.quick:
        seeds, n_prompts, updates, every = (0, 1), 16, 2, 1
        kw = {"rollout_size": 16, "minibatch_size": 8, "ppo_epochs": 1}
    else:
        seeds, n_prompts, updates, every, kw = SEEDS, 200, 60, 4, {}
    prompts = world.World(0).prompts(n_prompts, "eval")
    rows, scores, log = [], [], []
    for kl_coef in coefs:
        for seed in seeds:
            policy, tok = model.load(model.SFT)
            reference = model.load(model.SFT)[0].eval()
            rm, _ = RM.load()
            cfg = ppo.PPOConfig(updates=updates, kl_coef=kl_coef, eval_every=every, seed=seed,
                                **kw)
            t = time.process_time()
            h = ppo.train_ppo(policy, tok, rm, cfg, reference=reference, eval_prompts=prompts)
            log.append({"kl_coef": kl_coef, "seed": seed,
                        "cpu_seconds": round(time.process_time() - t, 1)})
            for e, s in zip(h.eval, h.eval_scores, strict=True):
                rows.append({"kl_coef": kl_coef, "seed": seed, "step": e["update"],
                             **{k: e[k] for k in ("kl", "total", "learned", "helpful", "safe",
                                                  "instruction", "tone", "stop_rate")}})
                scores += [{"kl_coef": kl_coef, "seed": seed, "step": e["update"],
                            "prompt": i, "gold": g, "learned": r}
                           for i, (g, r) in enumerate(zip(s["total"], s["learned"],
                                                          strict=True))]
            print(f"kl_coef {kl_coef} seed {seed}: {log[-1]['cpu_seconds']} s", flush=True)
    suffix = f"_{kl_arg:g}" if kl_arg is not None else ""
    pd.DataFrame(rows).round(5).to_csv(args.out / f"ppo_kl{suffix}.csv", index=False)
    pd.DataFrame(scores).round(4).to_csv(args.out / f"ppo_kl{suffix}_scores.csv", index=False)
    log.append({"kl_coef": None, "seed": None, "cpu_seconds": None,
                "note": f"python -m experiments.ppo_kl {command}; {machine()}"})
    pd.DataFrame(log).to_csv(args.out / f"ppo_kl{suffix}_runs.csv", index=False)


if __name__ == "__main__":
    main()
