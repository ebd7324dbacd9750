"""PPO seed to seed, DPO next to it on the same data, and reward hacking with a small KL.

    python -m experiments.ppo_seeds [--quick] [--out DIR]

1. PPO from the SFT model against the bundled reward model (``data/tiny-llama-rm``), with
   ``PPOConfig()`` defaults, over several seeds; DPO from the SFT model on the pairs that
   reward model was trained on, with the settings of ``python -m dpolab align``
   (``pipeline.DEFAULTS``), over the same seeds. Held-out gold reward and sampled KL
   every few updates/steps: ``ppo_seeds.csv``.
2. The same PPO with a KL coefficient small enough that the policy can leave the region
   where the reward model is right, for longer: learned and gold reward at every
   evaluation (``ppo_hacking.csv``) and the generations with their learned and gold
   rewards at the start and at the end (``ppo_hacking_samples.csv``).
3. Peak memory of one PPO update and of DPO steps on the same model
   (``memory.measured_peak``: parameters plus the peak of the allocator), and the number
   of model copies each holds (``ppo_vs_dpo_memory.csv``).

Every CSV starts from the same held-out prompts (``World(0).prompts(n, "eval")``, the four
alignment families), and ``ppo_seeds_runs.csv`` records the command, machine and time.
"""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from functools import partial

import pandas as pd
import torch

from experiments.common import Timer, machine, setup


def pairs() -> list[dict]:
    """The reward model's training pairs (scripts/make_reward_model.py), also DPO's."""
    from dpolab import env, preference
    rows = []
    for name in ("offpolicy_train", "onpolicy_train"):
        rows += preference.load_pairs(env.data_dir() / "prefs" / f"{name}.jsonl",
                                      policy="raise")[0]
    random.Random(0).shuffle(rows)
    return rows


def ppo_run(cfg, prompts, **labels) -> tuple[list[dict], object]:
    from dpolab import model, ppo
    from dpolab import reward_model as RM
    policy, tok = model.load(model.SFT)
    reference = model.load(model.SFT)[0].eval()
    rm, _ = RM.load()
    h = ppo.train_ppo(policy, tok, rm, cfg, reference=reference, eval_prompts=prompts)
    return [{**labels, "step": e["update"], "kl": e["kl"], "gold": e["total"],
             "learned": e["learned"], **{k: e[k] for k in ("helpful", "safe", "instruction",
                                                          "tone", "stop_rate")}}
            for e in h.eval], (policy, reference, rm, tok, h)


def dpo_run(rows, cfg, prompts, **labels) -> list[dict]:
    from dpolab import dpo, model
    policy, tok = model.load(model.SFT)
    reference = model.load(model.SFT)[0].eval()
    h = dpo.train_dpo(policy, tok, rows, cfg, ref_model=reference, eval_prompts=prompts)
    return [{**labels, "step": e["step"], "kl": e["kl"], "gold": e["total"],
             **{k: e[k] for k in ("helpful", "safe", "instruction", "tone", "stop_rate")}}
            for e in h.eval]


def samples(policy, reference, rm, tok, prompts, stage: str) -> list[dict]:
    """Generations on held-out prompts with their learned and gold rewards."""
    from dpolab import evaluate, judge
    from dpolab import reward_model as RM
    gens = evaluate.sample(policy, tok, prompts, seed=0)
    learned = RM.rewards(rm, tok, [g.prompt for g in gens], [g.response for g in gens])
    return [{"stage": stage, "prompt": g.prompt, "response": g.response,
             "family": p.task.family, "learned": round(r, 4),
             "gold": round(judge.score(g.prompt, g.response, g.finished).total, 4)}
            for p, g, r in zip(prompts, gens, learned.tolist(), strict=True)]


def memory(rows: list[dict], quick: bool = False) -> list[dict]:
    """Peak memory of two PPO updates and of two DPO steps (``memory.cpu_peak``: the most
    bytes the allocator held), counting every model each run creates: PPO copies the
    policy into its reference and the reward model into its value model; DPO copies the
    policy into its reference (``reference="model"``), or computes the reference's
    log-probs once before training and keeps no second model (``"precomputed"``). All take
    gradient steps on 64 sequences (one PPO minibatch of 64 rollouts; 32 DPO pairs).
    Measured on the bundled model, where activations outweigh the weights, and on a wider
    random-weight Llama of the same tokenizer, where the weights count for more."""
    import copy

    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    from dpolab import dpo, memory, model, ppo
    from dpolab import reward_model as RM
    policy, tok = model.load(model.SFT)
    config = model.tiny_llama_config(tok, d_model=384, n_layers=6, n_heads=6, d_ff=1152)
    torch.manual_seed(0)
    wide = LlamaForCausalLM(config)
    rm_config = copy.deepcopy(config)
    rm_config.num_labels = 1
    sizes = {"bundled": (policy, RM.load()[0]),
             "wide (random weights)": (wide, LlamaForSequenceClassification(rm_config))}
    rows_per_step = 64
    if quick:
        sizes.pop("wide (random weights)")
        rows_per_step = 8
    cfg_ppo = ppo.PPOConfig(updates=2, rollout_size=rows_per_step, minibatch_size=rows_per_step,
                            ppo_epochs=1, normalize_reward=False)
    cfg_dpo = dpo.DPOConfig(steps=2, batch_size=rows_per_step // 2)

    def run_ppo(pol, rm):
        ppo.train_ppo(copy.deepcopy(pol), tok, copy.deepcopy(rm), cfg_ppo)

    def run_dpo(pol, rm, reference="model"):
        dpo.train_dpo(copy.deepcopy(pol), tok, rows, replace(cfg_dpo, reference=reference))

    out = []
    for size, (pol, rm) in sizes.items():
        for name, fn, copies, trained in (("PPO", run_ppo, 4, 2), ("DPO", run_dpo, 2, 1),
                                          ("DPO, precomputed reference",
                                           partial(run_dpo, reference="precomputed"), 1, 1)):
            _, peak = memory.cpu_peak(lambda fn=fn, pol=pol, rm=rm: fn(pol, rm))
            out.append({"model": size, "method": name, "model_copies": copies,
                        "trained_copies": trained, "params_per_copy": model.n_params(pol),
                        "peak_mb": round(peak / 2 ** 20, 1)})
    return out


def main() -> None:
    args = setup(__doc__)
    from dpolab import pipeline, ppo, world
    if args.quick:
        seeds, n_prompts, updates, hack_updates, dpo_steps = [0, 1], 16, 2, 3, 4
        ppo_kw = {"rollout_size": 16, "minibatch_size": 8, "ppo_epochs": 1}
    else:
        seeds, n_prompts, updates, hack_updates, dpo_steps = [0, 1, 2], 200, 30, 60, None
        ppo_kw = {}
    prompts = world.World(0).prompts(n_prompts, "eval")
    rows = pairs()
    log = []

    seed_rows = []
    for seed in seeds:
        cfg = ppo.PPOConfig(updates=updates, eval_every=max(1, updates // 6), seed=seed,
                            **ppo_kw)
        with Timer() as t:
            seed_rows += ppo_run(cfg, prompts, method="PPO", seed=seed)[0]
        log.append({"run": f"PPO seed={seed}", "seconds": round(t.seconds, 1)})
        dcfg = replace(pipeline.DEFAULTS, steps=dpo_steps or pipeline.DEFAULTS.steps,
                       eval_every=dpo_steps or 15, seed=seed)
        with Timer() as t:
            seed_rows += dpo_run(rows, dcfg, prompts, method="DPO", seed=seed)
        log.append({"run": f"DPO seed={seed}", "seconds": round(t.seconds, 1)})
    pd.DataFrame(seed_rows).to_csv(args.out / "ppo_seeds.csv", index=False)

    cfg = ppo.PPOConfig(updates=hack_updates, kl_coef=0.002, eval_every=max(1, hack_updates // 15),
                        **ppo_kw)
    with Timer() as t:
        hack_rows, (policy, reference, rm, tok, _) = ppo_run(cfg, prompts, method="PPO",
                                                             kl_coef=cfg.kl_coef)
    log.append({"run": f"PPO kl_coef={cfg.kl_coef}", "seconds": round(t.seconds, 1)})
    pd.DataFrame(hack_rows).to_csv(args.out / "ppo_hacking.csv", index=False)
    shown = prompts[:40]
    pd.DataFrame(samples(reference, reference, rm, tok, shown, "sft")
                 + samples(policy, reference, rm, tok, shown, "ppo")).to_csv(
        args.out / "ppo_hacking_samples.csv", index=False)

    with Timer() as t:
        pd.DataFrame(memory(rows, args.quick)).to_csv(args.out / "ppo_vs_dpo_memory.csv",
                                                      index=False)
    log.append({"run": "memory", "seconds": round(t.seconds, 1)})
    log.append({"run": "command", "seconds": None,
                "note": f"python -m experiments.ppo_seeds {' '.join(sys.argv[1:])}; {machine()}"})
    pd.DataFrame(log).to_csv(args.out / "ppo_seeds_runs.csv", index=False)
    print(pd.DataFrame(log).to_string())


if __name__ == "__main__":
    main()
