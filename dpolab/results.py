"""Reading the committed experiment results (``experiments/results``): the reward–KL
frontier, domination between methods, and the views notebooks 09 and 10 put sliders on.

Pure functions of data frames: a learner explores the sweeps without retraining anything.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
MARKERS = {"DPO": "o", "PPO (learned RM)": "s", "PPO (gold reward)": "D", "preferred-FT": "^",
           "best-of-N": "*"}


def load(name: str, folder: str | Path = RESULTS) -> pd.DataFrame:
    """``<folder>/<name>.csv``, with a clear error when the experiment has not been run."""
    path = Path(folder) / f"{name}.csv"
    if not path.exists():
        script = name.split("_")[0]
        raise FileNotFoundError(f"{path} not found: run `python -m experiments.{script}` from "
                                "the repository root to produce it")
    return pd.read_csv(path)


def trained(points: pd.DataFrame) -> pd.DataFrame:
    """Points after some training (step > 0), or any best-of-N point: step 0 of every
    trained run is the SFT model itself."""
    return points[(points.step > 0) | (points.method == "best-of-N")]


def dominates(a: pd.Series, b: pd.Series, margin: float = 0.0) -> bool:
    """``a`` beats ``b`` on both axes: strictly less KL and more gold reward, by more than
    ``margin`` (set it to the evaluation's sampling noise to count only clear wins)."""
    return bool(a.kl < b.kl and a.gold > b.gold + margin)


def dominated_fraction(points: pd.DataFrame, target: str, by: str, margin: float = 0.0) -> float:
    """Share of the trained points of method ``target`` that some trained point of method
    ``by`` beats on both axes (the DPO paper's claim about PPO, measured). "Some point" favours
    the method with more points, and noise helps it too: compare with ``margin > 0``."""
    t, b = trained(points[points.method == target]), trained(points[points.method == by])
    if t.empty or b.empty:
        raise ValueError(f"no trained points for {target!r} or {by!r}: methods present are "
                         f"{sorted(points.method.unique())}")
    return sum(any(dominates(y, x, margin) for _, y in b.iterrows())
               for _, x in t.iterrows()) / len(t)


def pareto(points: pd.DataFrame) -> pd.DataFrame:
    """The points no other point beats on both axes, by increasing KL: the frontier."""
    keep = [i for i, x in points.iterrows()
            if not any(dominates(y, x) for _, y in points.iterrows())]
    return points.loc[keep].sort_values("kl")


def plot_frontier(points: pd.DataFrame, ax: plt.Axes | None = None,
                  title: str = "Reward–KL frontier, held-out prompts") -> plt.Figure:
    """Gold reward against sampled KL to the SFT model, one marker per method, each
    method's own frontier drawn as a line, and the SFT model as a star at KL 0."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.5, 5))
    start = points[(points.step == 0) & (points.method != "best-of-N")]
    for i, (method, group) in enumerate(trained(points).groupby("method", sort=False)):
        color = f"C{i}"
        ax.scatter(group.kl, group.gold, marker=MARKERS.get(method, "o"), color=color,
                   alpha=0.7, label=method)
        front = pareto(group)
        ax.plot(front.kl, front.gold, color=color, lw=1, alpha=0.6)
    if not start.empty:
        ax.scatter([0], [start.gold.mean()], marker="X", s=120, color="k", label="SFT model")
    ax.set(title=title, xlabel="sampled KL(policy || SFT), nats per response",
           ylabel="mean gold reward")
    ax.legend(fontsize=8)
    return fig


def final(points: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run (method, setting, seed)."""
    keys = [k for k in ("method", "setting", "seed", "loss_type", "experiment") if k in points]
    return points.sort_values("step").groupby(keys, sort=False).tail(1)


def over_seeds(runs: pd.DataFrame, by: str | list[str],
               metrics: tuple[str, ...] = ("gold", "kl", "heldout_accuracy")) -> pd.DataFrame:
    """Mean of each metric over the seeds of each setting ``by``, with ``<metric>_std`` (the
    std over seeds, NaN for one seed) and ``seeds`` (how many). Indexed by ``by``, sorted."""
    metrics = [m for m in metrics if m in runs]
    groups = runs.groupby(by)
    out = groups[metrics].mean()
    out[[f"{m}_std" for m in metrics]] = groups[metrics].std().to_numpy()
    out["seeds"] = groups.size()
    return out.sort_index()


def sweep_view(sweep: pd.DataFrame, param: str, value: float,
               metrics: tuple[str, ...] = ("gold", "kl", "heldout_accuracy"),
               ) -> tuple[plt.Figure, pd.Series]:
    """One panel per metric against ``param`` (log axis): the mean over seeds with the std as
    error bars, each seed as a grey dot, the setting nearest ``value`` circled; returns the
    figure and that setting's row of ``over_seeds``. The body of a slider over a sweep."""
    stats = over_seeds(sweep, param, metrics)
    chosen = stats.iloc[abs(stats.index - value).argmin()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.3))
    for ax, metric in zip(axes, metrics, strict=True):
        ax.scatter(sweep[param], sweep[metric], s=10, color="grey", alpha=0.6, label="one seed")
        ax.errorbar(stats.index, stats[metric], yerr=stats[f"{metric}_std"], fmt="o-",
                    capsize=3, label=f"mean of {int(stats.seeds.max())} seeds")
        ax.plot([chosen.name], [chosen[metric]], "o", ms=14, mfc="none", mec="C3", mew=2)
        ax.set(xscale="log", xlabel=param, ylabel=metric, title=f"{metric} vs {param}")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{param} = {chosen.name:g}: gold {chosen.gold:.3f} ± {chosen.gold_std:.3f}, "
                 f"KL {chosen.kl:.2f} (mean ± std over seeds)")
    fig.tight_layout()
    return fig, chosen


def noise_view(noise: pd.DataFrame, flip: float) -> tuple[plt.Figure, pd.DataFrame]:
    """Gold reward against the share of flipped labels, one line per loss (mean over seeds,
    std as error bars), with the losses at the flip rate nearest ``flip`` returned as a
    table of means over seeds."""
    nearest = noise.flip.iloc[(noise.flip - flip).abs().argmin()]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for loss, group in noise.groupby("loss_type", sort=False):
        s = over_seeds(group, "flip", ("gold",))
        ax.errorbar(s.index, s.gold, yerr=s.gold_std, fmt="o-", capsize=3, label=loss)
    ax.axvline(nearest, color="grey", ls="--")
    ax.set(xlabel="share of training labels flipped", ylabel="mean gold reward",
           title="Label noise: gold reward after training (mean ± std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, over_seeds(noise[noise.flip == nearest], "loss_type")
