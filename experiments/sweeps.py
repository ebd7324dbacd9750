"""DPO's beta, learning rate and epochs, swept on the same data.

Includes the values usually quoted for large models (beta 0.1–0.5, learning rate 5e-7 to
5e-6, 1–3 epochs; the original lesson's "typical values") next to the ones this
~1M-parameter model needs. One run per value and seed (three seeds: training order and
evaluation samples); each reports the held-out gold reward, the sampled KL to the SFT
model and the held-out reward accuracy after training. Every evaluation of a seed uses the
same prompts and sampling seed, so two settings (or two epochs) compare *paired*.

    python -m experiments.sweeps [--quick] [--out DIR]

Writes ``sweeps.csv`` (one row per evaluation kept), ``sweeps_prompts.csv`` (the gold total
per prompt of the same evaluations) and ``sweeps.png``.
"""

from __future__ import annotations

import pandas as pd

from experiments.common import eval_prompts, heldout_metrics, machine, read_pairs, setup

METRICS = ("gold", "kl", "heldout_accuracy")


def run_scored(rows: list[dict], cfg, prompts, heldout: list[dict] | None = None,
               policy=None, **labels) -> tuple[list[dict], list[list[float]], object]:
    """``common.run_dpo`` that also returns the gold total per prompt of each evaluation
    (``History.eval_scores``: the same prompts and sampling seed every time, so paired).
    Returns (one row per evaluation, per-prompt totals per evaluation, trained policy)."""
    from dpolab import dpo, model, variants
    fresh, tok = model.load(model.SFT)
    policy = fresh if policy is None else policy
    reference = model.load(model.SFT)[0].eval()
    h = dpo.train_dpo(policy, tok, rows, cfg, ref_model=reference, eval_prompts=prompts)
    acc = {t["step"]: t["rewards/accuracies"] for t in h.train}
    out = [{**labels, "step": e["step"], "pairs_seen": e["step"] * cfg.batch_size,
            "kl": e["kl"], "gold": e["total"],
            **{k: e[k] for k in ("helpful", "safe", "instruction", "tone", "stop_rate")
               if k in e},
            "train_accuracy": acc.get(e["step"], float("nan"))} for e in h.eval]
    if heldout:
        out[-1].update(heldout_metrics(policy, reference, tok, heldout, cfg.average_logps,
                                       cfg.loss_type.split("(")[0] in variants.REFERENCE_FREE))
    return out, [s["total"] for s in h.eval_scores], policy


def prompt_rows(row: dict, totals: list[float], keys: tuple[str, ...]) -> list[dict]:
    """Long-format per-prompt gold of one evaluation, labelled by ``row[k]`` for ``keys``."""
    return [{**{k: row.get(k) for k in keys}, "prompt": i, "gold": g}
            for i, g in enumerate(totals)]


def plot(sweeps: pd.DataFrame, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dpolab.results import over_seeds
    fig, axes = plt.subplots(3, 3, figsize=(12, 9))
    for row, (name, x) in zip(axes, [("beta", "beta"), ("lr", "lr"), ("epochs", "epoch")],
                              strict=True):
        runs = sweeps[sweeps.sweep == name]
        # one held-out accuracy per run: after each epoch, the training-batch accuracy instead
        metrics = METRICS if name != "epochs" else ("gold", "kl", "train_accuracy")
        for ax, metric in zip(row, metrics, strict=True):
            stats = over_seeds(runs, x, (metric,))
            ax.errorbar(stats.index, stats[metric], yerr=stats[f"{metric}_std"], fmt="o-",
                        capsize=3)
            ax.scatter(runs[x], runs[metric], s=8, color="grey", alpha=0.6)
            ax.set(xscale="linear" if name == "epochs" else "log", xlabel=x, ylabel=metric,
                   title=f"{metric} vs {x}")
            if name == "lr" and metric == "kl":  # from 1e-4 to 1e2 nats
                ax.set_yscale("symlog", linthresh=0.01)
                ax.set_ylim(bottom=0)
            if name == "lr":
                ax.axvspan(5e-7, 5e-6, color="C1", alpha=0.15, label="typical for large models")
                ax.legend(fontsize=7)
    fig.suptitle("DPO sweeps on the tiny model (held-out prompts and pairs; "
                 "mean and std over seeds, grey: each seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    args = setup(__doc__.splitlines()[0])
    from dpolab import dpo
    if args.quick:
        betas, lrs, steps, n_prompts, n_heldout, epochs, epoch_pairs, seeds = \
            [0.1, 1.0], [5e-4], 2, 8, 8, 2, 16, [0]
    else:
        betas, lrs, steps, n_prompts, n_heldout, epochs, epoch_pairs, seeds = \
            [0.02, 0.1, 0.5, 2.0], [5e-7, 5e-6, 5e-5, 5e-4, 2e-3], 24, 96, 200, 3, 128, [0, 1, 2]
    base_beta, base_lr, batch_size = 0.1, 5e-4, 16
    prompts = eval_prompts(n_prompts)
    train = read_pairs("offpolicy_train", steps * batch_size)
    heldout = read_pairs("offpolicy_heldout", n_heldout)
    rows, per_prompt = [], []
    keys = ("sweep", "beta", "lr", "seed", "step", "epoch")

    def keep(row: dict, totals: list[float], scores_only: bool = False) -> None:
        if not scores_only:
            rows.append(row)
        per_prompt.extend(prompt_rows(row, totals, keys))

    def run(sweep: str, seed: int, **over) -> None:
        cfg = dpo.DPOConfig(**{"beta": base_beta, "lr": base_lr, "steps": steps, "seed": seed,
                               "batch_size": batch_size, "reference": "precomputed", **over})
        pts, totals, _ = run_scored(train, cfg, prompts, heldout, sweep=sweep, beta=cfg.beta,
                                    lr=cfg.lr, seed=seed)
        # the SFT model (step 0) on the same prompts and samples: per-prompt scores only, so
        # sweeps.csv keeps one row per trained run
        keep({**pts[0], "step": 0}, totals[0], scores_only=True)
        keep(pts[-1], totals[-1])

    per_epoch = epoch_pairs // batch_size
    for seed in seeds:
        for beta in betas:
            run("beta", seed, beta=beta)
        for lr in lrs:
            if lr == base_lr and base_beta in betas:  # the same runs as the beta sweep's
                row = next(r for r in rows if r["sweep"] == "beta" and r["seed"] == seed
                           and r["beta"] == base_beta)
                for step in (0, row["step"]):
                    totals = [p["gold"] for p in per_prompt if p["sweep"] == "beta"
                              and p["seed"] == seed and p["beta"] == base_beta
                              and p["step"] == step]
                    keep({**row, "sweep": "lr", "step": step}, totals, scores_only=step == 0)
            else:
                run("lr", seed, lr=lr)
        # epochs: several passes over a small set of pairs, evaluated after each pass
        cfg = dpo.DPOConfig(beta=base_beta, lr=base_lr, epochs=epochs, batch_size=batch_size,
                            reference="precomputed", eval_every=per_epoch, seed=seed)
        pts, totals, _ = run_scored(train[:epoch_pairs], cfg, prompts, heldout, sweep="epochs",
                                    beta=base_beta, lr=base_lr, seed=seed)
        for p, t in zip(pts, totals, strict=True):
            keep({**p, "epoch": p["step"] / per_epoch}, t)

    sweeps = pd.DataFrame(rows)
    sweeps["machine"] = machine()
    sweeps.to_csv(args.out / "sweeps.csv", index=False)
    pd.DataFrame(per_prompt).to_csv(args.out / "sweeps_prompts.csv", index=False)
    plot(sweeps, args.out / "sweeps.png")
    print(sweeps.groupby(["sweep", "beta", "lr", "step"], sort=False)[list(METRICS)]
          .agg(["mean", "std"]).round(3).to_string())


if __name__ == "__main__":
    main()
