"""DPO against RLHF with PPO: what the two pipelines hold, counted and measured.

Pipeline stages, models in memory, model state per parameter, and the peak resident memory
of a short run of each, measured in its own process with 32 sequences per gradient step in
both. Gold reward, KL and training time are compared fairly in ``experiments.matched``.

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


def table(memory: dict) -> pd.DataFrame:
    rows = {}
    for m in MODELS:
        n = memory[m]["n_params"]
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
        }
    return pd.DataFrame(rows)


def plot(tab: pd.DataFrame, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title, unit in (
            (a, "model state, bytes per parameter (fp32 + AdamW)", "Model state while training",
             "bytes per parameter of the policy"),
            (b, "peak RSS above imports, MB", "Peak memory of a short run, above imports",
             "MB")):
        ax.bar(["DPO", "PPO"], tab.loc[key, ["DPO", "PPO"]].astype(float), color=["C0", "C1"])
        ax.set(title=title, ylabel=unit)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child(sys.argv[2], int(sys.argv[3]))
    args = setup(__doc__.splitlines()[0])
    steps = {"DPO": 2, "PPO": 1} if args.quick else {"DPO": 10, "PPO": 3}
    tab = table({m: peak_memory(m, s) for m, s in steps.items()})
    tab["machine"] = machine()
    tab.to_csv(args.out / "compare.csv", index_label="quantity")
    plot(tab, args.out / "compare.png")
    print(tab.drop(columns="machine").to_string())


if __name__ == "__main__":
    main()
