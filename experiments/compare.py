"""DPO against RLHF with PPO, the comparison table measured.

Pipeline stages, models in memory, memory (model state per parameter, and the peak
resident memory of a short run of each, measured in its own process, 32 sequences per
gradient step in both), wall time to a
given gold reward, the hyperparameters swept and how much they moved the gold reward,
seed-to-seed spread and final gold reward. Reads ``frontier.csv`` and ``sweeps.csv``
(run those first), so it costs only the two short memory runs.

    python -m experiments.compare [--quick] [--out DIR]

Writes ``compare.csv`` (quantity x method) and ``compare.png``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pandas as pd

from experiments.common import ROOT, machine, read_pairs, setup

# bytes per parameter of model state in fp32: a trained model holds weights, gradients and
# AdamW's two moments (16 B); a frozen one only its weights (4 B)
TRAINED, FROZEN = 16, 4
MODELS = {"DPO": {"policy": TRAINED, "reference": FROZEN},
          "PPO": {"policy": TRAINED, "value model": TRAINED, "reference": FROZEN,
                  "reward model": FROZEN}}


def peak_memory(method: str, steps: int) -> dict:
    """Run ``steps`` steps of ``method`` in a fresh process; its peak RSS above the RSS
    after imports."""
    out = subprocess.run([sys.executable, "-m", "experiments.compare", "--child", method,
                          str(steps)], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(method: str, steps: int) -> None:
    import torch
    torch.set_num_threads(1)
    from dpolab import dpo, model, ppo
    from dpolab import reward_model as RM
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    policy, tok = model.load(model.SFT)
    if method == "DPO":
        dpo.train_dpo(policy, tok, read_pairs("offpolicy_train", 16 * steps),
                      dpo.DPOConfig(steps=steps, batch_size=16, lr=5e-4))
    else:
        rm, _ = RM.from_sft()
        # one minibatch of 32 sequences per gradient step, as DPO's 16 pairs
        ppo.train_ppo(policy, tok, rm, ppo.PPOConfig(updates=steps, rollout_size=32,
                                                     minibatch_size=32, ppo_epochs=2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_after_imports_mb": base / 1024, "peak_rss_mb": peak / 1024,
                      "n_params": model.n_params(policy)}))


def time_to_gold(points: pd.DataFrame, threshold: float) -> float:
    """Wall seconds (evaluations included) until the first evaluation at or above
    ``threshold``, the fastest run; NaN if no run gets there."""
    hit = points[(points.gold >= threshold) & (points.step > 0)]
    return float(hit.seconds.min()) if not hit.empty else float("nan")


def table(frontier: pd.DataFrame, sweeps: pd.DataFrame | None, memory: dict,
          rm_seconds: float) -> pd.DataFrame:
    from dpolab import results
    methods = {"DPO": frontier[frontier.method == "DPO"],
               "PPO": frontier[frontier.method == "PPO (learned RM)"]}
    sft_gold = frontier[frontier.step == 0].gold.mean()
    finals = {m: results.final(p) for m, p in methods.items()}
    best = {m: f.groupby("setting").gold.mean().idxmax() for m, f in finals.items()}
    gain = min(f.groupby("setting").gold.mean().max() for f in finals.values()) - sft_gold
    threshold = sft_gold + gain / 2
    rows = {}
    for m, p in methods.items():
        f = finals[m]
        spread = f.groupby("setting").gold.std().dropna()
        n = memory[m]["n_params"]
        if m == "DPO":
            effect = {k: sweeps[sweeps.sweep == k].groupby(k).gold.mean().agg(["min", "max"])
                      .tolist() for k in ("beta", "lr")} if sweeps is not None else {}
        else:
            effect = {"kl_coef": f.groupby("setting").gold.mean().agg(["min", "max"]).tolist()}
        rss, base = memory[m]["peak_rss_mb"], memory[m]["rss_after_imports_mb"]
        rows[m] = {
            "pipeline stages": "SFT -> DPO" if m == "DPO" else "SFT -> reward model -> PPO",
            "models in memory while training": len(MODELS[m]),
            "of which trained": sum(v == TRAINED for v in MODELS[m].values()),
            "model state, bytes per parameter (fp32 + AdamW)": sum(MODELS[m].values()),
            "model state of this model, MB": sum(MODELS[m].values()) * n / 2**20,
            "model state of a 7B model, GB": sum(MODELS[m].values()) * 7e9 / 2**30,
            "peak RSS of a short run, MB": rss,
            "peak RSS above imports, MB": rss - base,
            f"gold threshold (SFT {sft_gold:.3f} + half the smaller best gain)": threshold,
            "wall seconds to the threshold (fastest run)": time_to_gold(p, threshold),
            "same, with reward-model training": time_to_gold(p, threshold)
            + (rm_seconds if m == "PPO" else 0.0),
            "hyperparameters swept: gold range (min, max of means over seeds)": json.dumps(
                {k: [round(x, 3) for x in v] for k, v in effect.items()}),
            "seed-to-seed std of final gold (per setting, max)":
                spread.max() if len(spread) else float("nan"),
            "best setting": best[m],
            "final gold, best setting (mean over seeds)": f[f.setting == best[m]].gold.mean(),
            "final KL, best setting (mean over seeds)": f[f.setting == best[m]].kl.mean(),
        }
    return pd.DataFrame(rows)


def plot(frontier: pd.DataFrame, tab: pd.DataFrame, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    for i, (method, group) in enumerate(frontier[frontier.method.isin(
            ["DPO", "PPO (learned RM)"])].groupby("method")):
        for j, (_, run) in enumerate(group.groupby(["setting", "seed"])):
            a.plot(run.seconds, run.gold, "o-", color=f"C{i}", alpha=0.6,
                   label=method if j == 0 else None)
    thr = [k for k in tab.index if k.startswith("gold threshold")][0]
    a.axhline(tab.loc[thr, "DPO"], color="grey", ls="--", label="threshold")
    a.set(title="Gold reward against wall time", xlabel="wall seconds (evaluations included)",
          ylabel="mean gold reward")
    a.legend(fontsize=8)
    key = "model state, bytes per parameter (fp32 + AdamW)"
    b.bar(["DPO", "PPO"], tab.loc[key, ["DPO", "PPO"]].astype(float), color=["C0", "C1"])
    b.set(title="Model state while training", ylabel="bytes per parameter of the policy")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child(sys.argv[2], int(sys.argv[3]))
    args = setup(__doc__.splitlines()[0])
    frontier = pd.read_csv(args.out / "frontier.csv")
    sweeps_path = args.out / "sweeps.csv"
    sweeps = pd.read_csv(sweeps_path) if sweeps_path.exists() else None
    steps = {"DPO": 2, "PPO": 1} if args.quick else {"DPO": 10, "PPO": 3}
    memory = {m: peak_memory(m, s) for m, s in steps.items()}
    runs = pd.read_csv(args.out / "frontier_runs.csv")
    rm_seconds = float(runs[runs.run == "reward model"].seconds.iloc[0])
    tab = table(frontier, sweeps, memory, rm_seconds)
    tab["machine"] = machine()
    tab.to_csv(args.out / "compare.csv", index_label="quantity")
    plot(frontier, tab, args.out / "compare.png")
    print(tab.drop(columns="machine").to_string())


if __name__ == "__main__":
    main()
