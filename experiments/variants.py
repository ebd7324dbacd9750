"""DPO and the losses that followed it, on the same data; then label noise, length
exploitation, online (iterative) DPO against offline DPO at equal label counts, and DPO's
implicit reward against a learned reward model.

    python -m experiments.variants [--quick] [--out DIR] [--seeds 0 1 2]
    python -m experiments.variants --merge DIR [DIR ...] [--out DIR]

``--seeds`` runs some of the seeds (one process per seed runs them side by side, each into
its own ``--out``); ``--merge`` concatenates such folders into ``--out`` and redraws the
figure.

Writes ``variants.csv`` (one row per kept evaluation, column ``experiment``: ``variants``,
``noise``, ``length``, ``online``), ``variants_prompts.csv`` (gold total and response length
per prompt of the same evaluations: same prompts and sampling seed within a seed, so paired),
``variants_pairs.csv`` (per held-out pair, the change of the chosen and rejected log-probs,
summed and per token), ``variants_rewards.csv`` (per held-out pair, the rewards of DPO's
implicit reward and of two reward models, with gold totals) and ``variants.png``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import pandas as pd

from experiments.common import eval_prompts, machine, read_pairs, setup
from experiments.sweeps import prompt_rows, run_scored

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
    "dpop": dict(beta=0.1, options=dict(lam=5.0)),
    "rpo": dict(beta=0.1, options=dict(alpha=0.05)),
    "apo_zero": dict(beta=0.1),
}
NOISE_LOSSES = ("sigmoid", "robust", "cdpo")
PROMPT_KEYS = ("experiment", "loss_type", "flip", "labels_used", "seed", "step")
FILES = ("variants", "variants_prompts", "variants_pairs", "variants_rewards")


def flip(rows: list[dict], share: float, seed: int = 0) -> list[dict]:
    """A copy of ``rows`` with exactly ``share`` of the labels swapped (chosen <-> rejected)."""
    rng = random.Random(seed)
    idx = set(rng.sample(range(len(rows)), round(share * len(rows))))
    return [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} if i in idx else r
            for i, r in enumerate(rows)]


def gold_labelled(rows: list[dict]) -> list[dict]:
    """The pairs whose gold scores differ, labelled by the gold judge (the better response
    chosen): flipping a share of these labels makes that share the true error rate."""
    return [r if r["gold_chosen"] > r["gold_rejected"] else
            {**r, "chosen": r["rejected"], "rejected": r["chosen"],
             "gold_chosen": r["gold_rejected"], "gold_rejected": r["gold_chosen"]}
            for r in rows if r["gold_chosen"] != r["gold_rejected"]]


def longer_wins(rows: list[dict]) -> list[dict]:
    """The pairs relabelled by an annotator who always prefers the longer response (pairs
    of equal length dropped): a dataset whose only signal is length."""
    return [{**r, "chosen": max(r["chosen"], r["rejected"], key=len),
             "rejected": min(r["chosen"], r["rejected"], key=len)}
            for r in rows if len(r["chosen"]) != len(r["rejected"])]


def response_tokens(policy, tok, prompts, seed: int = 0) -> list[int]:
    """Tokens per sampled response, one per prompt."""
    from dpolab import evaluate
    return [len(g.response_ids) for g in evaluate.sample(policy, tok, prompts, seed=seed)]


def config(loss_type: str, steps: int, batch_size: int, lr: float, seed: int,
           eval_every: int = 0, **over):
    """The ``DPOConfig`` of ``loss_type`` at its ``SETTINGS`` (``over`` replaces them); the
    options (eps included) are fixed in the registered loss, so ``label_smoothing`` stays None
    and the loss trains with exactly the eps its name shows."""
    from dpolab import dpo, variants
    s = {**SETTINGS[loss_type], **over}
    name = variants.register(loss_type, **s.get("options", {}))
    return dpo.DPOConfig(beta=s["beta"], loss_type=name, lr=lr, steps=steps, seed=seed,
                         batch_size=batch_size, reference="precomputed", eval_every=eval_every,
                         average_logps=s.get("average_logps", False))


def displacement(policy, tok, rows: list[dict]) -> pd.DataFrame:
    """Per held-out pair: how training moved ``log p`` of the chosen and the rejected
    response against the SFT model, summed over the response (nats) and per token (nats per
    token); one unit per column whatever the loss trained on. Negative chosen shift:
    likelihood displacement (Razin et al. 2024)."""
    from dpolab import dpo, model, pairs
    reference = model.load(model.SFT)[0].eval()
    examples, _ = pairs.encode_pairs(tok, rows)
    pol = dpo.precompute_ref_logps(policy, examples, tok.pad_token_id, 64)
    ref = dpo.precompute_ref_logps(reference, examples, tok.pad_token_id, 64)
    shift = (pol - ref).numpy()
    n_c = [len(e["chosen_ids"]) for e in examples]
    n_r = [len(e["rejected_ids"]) for e in examples]
    return pd.DataFrame({"pair": range(len(rows)), "chosen_shift": shift[:, 0],
                         "rejected_shift": shift[:, 1],
                         "chosen_shift_per_token": shift[:, 0] / n_c,
                         "rejected_shift_per_token": shift[:, 1] / n_r})


def reward_rows(scored: pd.DataFrame, **labels) -> list[dict]:
    cols = ["r_chosen", "r_rejected", "gold_chosen", "gold_rejected"]
    return [{**labels, "pair": i, **r} for i, r in enumerate(scored[cols].to_dict("records"))]


def plot(df: pd.DataFrame, shifts: pd.DataFrame, path) -> None:
    """Means over seeds; error bars: the std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dpolab.results import over_seeds
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    per_run = shifts.groupby(["loss_type", "seed"])[["chosen_shift", "rejected_shift"]].mean()
    s = per_run.groupby("loss_type").agg(["mean", "std"]).sort_values(("chosen_shift", "mean"))
    y = range(len(s))
    ax.barh([i - 0.2 for i in y], s.chosen_shift["mean"], 0.4, xerr=s.chosen_shift["std"],
            label="chosen")
    ax.barh([i + 0.2 for i in y], s.rejected_shift["mean"], 0.4, xerr=s.rejected_shift["std"],
            label="rejected")
    ax.set_yticks(list(y), s.index)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(title="Held-out log p change (summed over the response)", xlabel="nats")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for loss, g in df[df.experiment == "noise"].groupby("loss_type", sort=False):
        st = over_seeds(g, "flip", ("gold",))
        ax.errorbar(st.index, st.gold, yerr=st.gold_std, fmt="o-", capsize=3, label=loss)
    ax.set(title="True label noise (tie-free, gold-labelled pairs)",
           xlabel="share of labels flipped", ylabel="mean gold reward")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ln = over_seeds(df[df.experiment == "length"], "loss_type", ("response_tokens",))
    ax.bar(ln.index, ln.response_tokens, yerr=ln.response_tokens_std, capsize=3,
           color=["grey" if loss == "SFT model" else "C0" for loss in ln.index])
    ax.set(title="Length-biased labels: mean response length", ylabel="tokens per response")
    ax = axes[1, 1]
    for method, g in df[df.experiment == "online"].groupby("loss_type", sort=False):
        st = over_seeds(g, "labels_used", ("gold",))
        ax.errorbar(st.index, st.gold, yerr=st.gold_std, fmt="o-", capsize=3, label=method)
    ax.set(title="Iterative vs offline DPO", xlabel="preference labels used",
           ylabel="mean gold reward")
    ax.legend(fontsize=8)
    fig.suptitle("DPO variants, label noise, length, iterative DPO (mean and std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def merge(folders: list[Path], out: Path) -> None:
    """Concatenate the CSVs of runs over different seeds and redraw the figure."""
    for name in FILES:
        pd.concat([pd.read_csv(f / f"{name}.csv") for f in folders]).to_csv(
            out / f"{name}.csv", index=False)
    plot(pd.read_csv(out / "variants.csv"), pd.read_csv(out / "variants_pairs.csv"),
         out / "variants.png")


def main() -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--seeds", type=int, nargs="+")
    extra.add_argument("--merge", type=Path, nargs="+")
    known, rest = extra.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = setup(__doc__.splitlines()[0])
    if known.merge:
        return merge(known.merge, args.out)
    from dpolab import evaluate, model, reward_model, worldprefs
    if args.quick:
        steps, n_prompts, n_heldout, flips, budget, losses, seeds, rm_epochs = \
            2, 8, 8, [0.0, 0.4], 32, ["sigmoid", "robust", "simpo"], [0], 1
    else:
        steps, n_prompts, n_heldout, flips, budget, losses, seeds, rm_epochs = \
            16, 96, 200, [0.0, 0.2, 0.4], 256, list(SETTINGS), [0, 1, 2], 3
    seeds = known.seeds or seeds
    batch_size, lr = 16, 5e-4
    prompts = eval_prompts(n_prompts)
    train = read_pairs("offpolicy_train", steps * batch_size)
    clean = gold_labelled(read_pairs("offpolicy_train", 3 * steps * batch_size))
    clean = clean[:steps * batch_size]
    heldout = read_pairs("offpolicy_heldout", n_heldout)
    sft, tok = model.load(model.SFT)
    length_rows = read_pairs("offpolicy_train", 2 * steps * batch_size)
    biased = longer_wins(length_rows)
    print(f"length-biased set: {len(biased)} of {len(length_rows)} pairs "
          f"({len(length_rows) - len(biased)} of equal length dropped); tie-free gold-labelled "
          f"set: {len(clean)} pairs")
    rows, per_prompt, shifts, rewards = [], [], [], []
    if seeds[0] == 0:  # one model, no seeds: written once
        bundled_rm, rm_tok = reward_model.load()
        rewards += reward_rows(reward_model.score_pairs(bundled_rm, rm_tok, heldout),
                               model="reward model (bundled, 3000 pairs)", seed=0)

    def keep(row: dict, totals: list[float], tokens: list[int] | None = None) -> None:
        rows.append(row)
        new = prompt_rows(row, totals, PROMPT_KEYS)
        for p, n in zip(new, tokens or [None] * len(new), strict=True):
            p["tokens"] = n
        per_prompt.extend(new)

    for seed in seeds:
        def cfg(loss, n_steps=steps, seed=seed, **over):
            return config(loss, n_steps, batch_size, lr, seed, **over)

        for loss in losses:  # the variants side by side, on the same pairs
            c = cfg(loss)
            pts, totals, policy = run_scored(train, c, prompts, heldout, experiment="variants",
                                             loss_type=loss, flip=0.0, seed=seed,
                                             eps=c.effective_label_smoothing())
            keep({**pts[0], "step": 0}, totals[0])
            keep(pts[-1], totals[-1])
            shifts += [{"loss_type": loss, "seed": seed, **r}
                       for r in displacement(policy, tok, heldout).to_dict("records")]
            if loss == "sigmoid":  # its implicit reward, on the same held-out pairs
                ref = model.load(model.SFT)[0].eval()
                scored = evaluate.implicit_rewards(policy, ref, tok, heldout, c.beta)
                rewards += reward_rows(scored, model="DPO implicit reward (256 pairs)",
                                       seed=seed)

        # a reward model trained on the same 256 pairs and labels as DPO
        rm, rm_tok = reward_model.from_sft(seed=seed)
        reward_model.train_reward_model(rm, rm_tok, train, reward_model.RMConfig(
            epochs=rm_epochs, batch_size=batch_size, warmup_steps=2, seed=seed))
        rewards += reward_rows(reward_model.score_pairs(rm, rm_tok, heldout),
                               model="reward model (256 pairs)", seed=seed)

        for share in flips:  # true label noise: DPO against the losses built for it, eps = rate
            for loss in NOISE_LOSSES[:2 if args.quick else 3]:
                if share == 0.0 and loss != "sigmoid":
                    continue  # eps = 0: cDPO and robust DPO are DPO, the same run
                over = {} if loss == "sigmoid" else {"options": {"label_smoothing": share}}
                c = cfg(loss, **over)
                pts, totals, _ = run_scored(flip(clean, share, seed), c, prompts, None,
                                            experiment="noise", loss_type=loss, flip=share,
                                            seed=seed, eps=c.effective_label_smoothing())
                keep({**pts[0], "step": 0}, totals[0])
                keep(pts[-1], totals[-1])
                if share == 0.0:
                    for other in NOISE_LOSSES[1:2 if args.quick else 3]:
                        keep({**pts[-1], "loss_type": other, "eps": 0.0}, totals[-1])

        sft_tokens = response_tokens(sft, tok, prompts, seed)
        keep({"experiment": "length", "loss_type": "SFT model", "seed": seed, "step": 0,
              "response_tokens": sum(sft_tokens) / len(sft_tokens)}, [float("nan")] * n_prompts,
             sft_tokens)
        for loss in ("sigmoid", "simpo")[:1 if args.quick else 2]:  # a length-only signal
            pts, totals, policy = run_scored(biased, cfg(loss), prompts, None,
                                             experiment="length", loss_type=loss,
                                             pairs=len(biased), seed=seed)
            tokens = response_tokens(policy, tok, prompts, seed)
            keep({**pts[-1], "response_tokens": sum(tokens) / len(tokens)}, totals[-1], tokens)

        # iterative vs offline DPO at the same label counts; offline: pairs of two samples of
        # the SFT model (the reference), iterative: half of them, then pairs of its own samples
        half = budget // 2
        offline = read_pairs("onpolicy_train", budget)
        pts, totals, _ = run_scored(offline, cfg("sigmoid", budget // batch_size,
                                                 eval_every=half // batch_size), prompts,
                                    experiment="online", loss_type="offline DPO", round=1,
                                    seed=seed)
        for p, t in zip(pts, totals, strict=True):
            keep({**p, "labels_used": p["step"] * batch_size}, t)
        policy = None
        for round_ in (1, 2):
            pairs = read_pairs("onpolicy_train", half) if round_ == 1 else \
                list(worldprefs.onpolicy_pairs(policy, tok, half, seed=100 * seed + round_))
            pts, totals, policy = run_scored(pairs, cfg("sigmoid", half // batch_size), prompts,
                                             policy=policy, experiment="online",
                                             loss_type="iterative DPO (2 rounds)",
                                             round=round_, seed=seed)
            for p, t in list(zip(pts, totals, strict=True))[(round_ - 1):]:
                keep({**p, "labels_used": (round_ - 1) * half + p["step"] * batch_size}, t)

    df = pd.DataFrame(rows)
    df["machine"] = machine()
    df.to_csv(args.out / "variants.csv", index=False)
    pd.DataFrame(per_prompt).to_csv(args.out / "variants_prompts.csv", index=False)
    shifts = pd.DataFrame(shifts)
    shifts.round(5).to_csv(args.out / "variants_pairs.csv", index=False)
    pd.DataFrame(rewards).round(5).to_csv(args.out / "variants_rewards.csv", index=False)
    plot(df, shifts, args.out / "variants.png")
    last = df[(df.step > 0) | (df.experiment == "length")]
    print(last.groupby(["experiment", "loss_type", "flip", "labels_used"], sort=False,
                       dropna=False)[["gold", "kl", "heldout_accuracy", "response_tokens"]]
          .agg(["mean", "std"]).round(3).to_string())
    print(shifts.groupby("loss_type")[["chosen_shift", "chosen_shift_per_token"]].mean()
          .round(3).to_string())


if __name__ == "__main__":
    main()
