"""DPO and the losses that followed it, on the same data; then label noise, length
exploitation, and online (iterative) DPO against offline DPO at an equal label budget.

    python -m experiments.variants [--quick] [--out DIR]

Writes ``variants.csv`` (one row per run, column ``experiment``: ``variants``, ``noise``,
``length``, ``online``) and ``variants.png``.
"""

from __future__ import annotations

import random

import pandas as pd

from experiments.common import eval_prompts, machine, read_pairs, run_dpo, setup

# Each loss at settings its paper recommends, scaled for this model where needed.
SETTINGS = {
    "sigmoid": dict(beta=0.1),
    "ipo": dict(beta=0.1),
    "cdpo": dict(beta=0.1, options=dict(label_smoothing=0.1)),
    "robust": dict(beta=0.1, options=dict(label_smoothing=0.1)),
    "hinge": dict(beta=0.1),
    "simpo": dict(beta=2.0, options=dict(gamma=1.0), average_logps=True),
    "orpo": dict(beta=0.1, average_logps=True),
    "kto": dict(beta=0.1),
}


def flip(rows: list[dict], share: float, seed: int = 0) -> list[dict]:
    """A copy of ``rows`` with ``share`` of the labels swapped (chosen <-> rejected)."""
    rng = random.Random(seed)
    idx = set(rng.sample(range(len(rows)), round(share * len(rows))))
    return [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} if i in idx else r
            for i, r in enumerate(rows)]


def longer_wins(rows: list[dict]) -> list[dict]:
    """The pairs relabelled by an annotator who always prefers the longer response (pairs
    of equal length dropped): a dataset whose only signal is length."""
    out = [{**r, "chosen": max(r["chosen"], r["rejected"], key=len),
            "rejected": min(r["chosen"], r["rejected"], key=len)}
           for r in rows if len(r["chosen"]) != len(r["rejected"])]
    return out


def response_tokens(policy, tok, prompts, seed: int = 0) -> float:
    from dpolab import evaluate
    gens = evaluate.sample(policy, tok, prompts, seed=seed)
    return sum(len(g.response_ids) for g in gens) / len(gens)


def config(loss_type: str, steps: int, batch_size: int, lr: float, seed: int, **over):
    from dpolab import dpo, variants
    s = {**SETTINGS[loss_type], **over}
    name = variants.register(loss_type, **s.get("options", {}))
    return dpo.DPOConfig(beta=s["beta"], loss_type=name, lr=lr, steps=steps, seed=seed,
                         batch_size=batch_size, reference="precomputed",
                         average_logps=s.get("average_logps", False))


def plot(df: pd.DataFrame, path) -> None:
    """Means over seeds; error bars: the std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dpolab.results import over_seeds
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    v = over_seeds(df[df.experiment == "variants"], "loss_type", ("gold", "kl"))
    ax.errorbar(v.kl, v.gold, xerr=v.kl_std, yerr=v.gold_std, fmt="o", capsize=3)
    for loss, r in v.iterrows():
        ax.annotate(loss, (r.kl, r.gold), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set(title="Variants on the same pairs", xlabel="sampled KL to SFT (nats)",
           ylabel="mean gold reward")
    ax = axes[0, 1]
    for loss, g in df[df.experiment == "noise"].groupby("loss_type", sort=False):
        s = over_seeds(g, "flip", ("gold",))
        ax.errorbar(s.index, s.gold, yerr=s.gold_std, fmt="o-", capsize=3, label=loss)
    ax.set(title="Label noise", xlabel="share of labels flipped", ylabel="mean gold reward")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ln = over_seeds(df[df.experiment == "length"], "loss_type", ("response_tokens",))
    ax.bar(ln.index, ln.response_tokens, yerr=ln.response_tokens_std, capsize=3,
           color=["grey" if loss == "SFT model" else "C0" for loss in ln.index])
    ax.set(title="Length-biased labels: mean response length", ylabel="tokens per response")
    ax = axes[1, 1]
    for method, g in df[df.experiment == "online"].groupby("loss_type", sort=False):
        s = over_seeds(g, "labels_used", ("gold",))
        ax.errorbar(s.index, s.gold, yerr=s.gold_std, fmt="o-", capsize=3, label=method)
    ax.set(title="Online vs offline DPO", xlabel="preference labels used",
           ylabel="mean gold reward")
    ax.legend(fontsize=8)
    fig.suptitle("DPO variants, label noise, length, online DPO (mean and std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    args = setup(__doc__.splitlines()[0])
    from dpolab import model, worldprefs
    if args.quick:
        steps, n_prompts, n_heldout, flips, budget, losses, seeds = 2, 8, 8, [0.0, 0.4], 32, \
            ["sigmoid", "robust", "simpo"], [0]
    else:
        steps, n_prompts, n_heldout, flips, budget, losses, seeds = 16, 48, 200, \
            [0.0, 0.2, 0.4], 256, list(SETTINGS), [0, 1, 2]
    batch_size, lr = 16, 5e-4
    prompts = eval_prompts(n_prompts)
    train = read_pairs("offpolicy_train", steps * batch_size)
    heldout = read_pairs("offpolicy_heldout", n_heldout)
    sft, tok = model.load(model.SFT)
    length_rows = read_pairs("offpolicy_train", 2 * steps * batch_size)
    biased = longer_wins(length_rows)
    print(f"length-biased set: {len(biased)} of {len(length_rows)} pairs "
          f"({len(length_rows) - len(biased)} of equal length dropped)")
    rows = []

    for seed in seeds:
        def cfg(loss, n_steps=steps, **over):
            return config(loss, n_steps, batch_size, lr, seed, **over)

        for loss in losses:  # the variants, side by side
            pts, _ = run_dpo(train, cfg(loss), prompts, heldout, experiment="variants",
                             loss_type=loss, flip=0.0, seed=seed)
            rows.append(pts[-1])

        for share in flips:  # label noise: DPO against the losses built for it, eps = true rate
            for loss in ("sigmoid", "robust", "cdpo")[:2 if args.quick else 3]:
                if share == 0.0:  # the variants' run on clean labels
                    if loss in losses:
                        rows.append({**next(r for r in rows if r["loss_type"] == loss
                                            and r["seed"] == seed), "experiment": "noise"})
                    continue
                over = {} if loss == "sigmoid" else {"options": {"label_smoothing": share}}
                pts, _ = run_dpo(flip(train, share, seed), cfg(loss, **over), prompts, heldout,
                                 experiment="noise", loss_type=loss, flip=share, seed=seed)
                rows.append(pts[-1])

        rows.append({"experiment": "length", "loss_type": "SFT model", "seed": seed,
                     "response_tokens": response_tokens(sft, tok, prompts, seed)})
        for loss in ("sigmoid", "simpo")[:1 if args.quick else 2]:  # a length-only signal
            pts, policy = run_dpo(biased, cfg(loss), prompts, heldout, experiment="length",
                                  loss_type=loss, pairs=len(biased), seed=seed)
            rows.append({**pts[-1], "response_tokens": response_tokens(policy, tok, prompts, seed)})

        # online vs offline at the same number of labels, both on samples of a model
        offline = read_pairs("onpolicy_train", budget)
        pts, _ = run_dpo(offline, cfg("sigmoid", budget // batch_size), prompts,
                         experiment="online", loss_type="offline DPO", round=1, seed=seed)
        rows += [{**p, "labels_used": p["step"] * batch_size} for p in (pts[0], pts[-1])]
        half = budget // 2
        policy = None
        for round_ in (1, 2):
            pairs = read_pairs("onpolicy_train", half) if round_ == 1 else \
                list(worldprefs.onpolicy_pairs(policy, tok, half, seed=100 * seed + round_))
            pts, policy = run_dpo(pairs, cfg("sigmoid", half // batch_size), prompts,
                                  policy=policy, experiment="online",
                                  loss_type="online DPO (2 rounds)", round=round_, seed=seed)
            rows += [{**p, "labels_used": (round_ - 1) * half + p["step"] * batch_size}
                     for p in (pts if round_ == 1 else pts[1:])]

    df = pd.DataFrame(rows)
    df["machine"] = machine()
    df.to_csv(args.out / "variants.csv", index=False)
    plot(df, args.out / "variants.png")
    print(df.groupby(["experiment", "loss_type", "flip", "labels_used"], sort=False, dropna=False)
          [["gold", "kl", "heldout_accuracy", "response_tokens"]].agg(["mean", "std"])
          .round(3).to_string())


if __name__ == "__main__":
    main()
