"""Reading the committed experiment results (``experiments/results``): the views notebook
10 puts sliders on, and notebook 09's matched-KL comparisons on per-prompt scores.

Pure functions of data frames: a learner explores the sweeps without retraining anything.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import stats

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"


def load(name: str, folder: str | Path = RESULTS) -> pd.DataFrame:
    """``<folder>/<name>.csv``, with a clear error when the experiment has not been run."""
    path = Path(folder) / f"{name}.csv"
    if not path.exists():
        scripts = [p.stem for p in RESULTS.parent.glob("*.py") if name.startswith(p.stem)]
        script = max(scripts, key=len, default=name.split("_")[0])
        raise FileNotFoundError(f"{path} not found: run `python -m experiments.{script}` from "
                                "the repository root to produce it")
    return pd.read_csv(path)


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
    agg = over_seeds(sweep, param, metrics)
    chosen = agg.iloc[abs(agg.index - value).argmin()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.3))
    for ax, metric in zip(axes, metrics, strict=True):
        ax.scatter(sweep[param], sweep[metric], s=10, color="grey", alpha=0.6, label="one seed")
        ax.errorbar(agg.index, agg[metric], yerr=agg[f"{metric}_std"], fmt="o-",
                    capsize=3, label=f"mean of {int(agg.seeds.max())} seeds")
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


# --- matched-KL comparisons on per-prompt scores (experiments/matched.py) -----------------------

RUN = ["method", "setting", "recipe", "seed"]


def prompt_scores(scores: pd.DataFrame) -> dict[tuple, np.ndarray]:
    """``(method, setting, recipe, seed, step)`` → the gold total of each evaluation prompt,
    in the same prompt order for every evaluation (the rows of ``*_scores.csv``)."""
    return {tuple(r[RUN + ["step"]]): np.array(r.scores.split(), dtype=float)
            for _, r in scores.iterrows()}


def gain_curves(points: pd.DataFrame, per_prompt: dict[tuple, np.ndarray], method: str,
                recipe: str) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per seed of ``method`` on ``recipe``: the KL of each evaluation, its CPU seconds, and
    the per-prompt gain over that seed's own step 0 (the SFT model on the same prompts and
    sampling seed), shape ``(evaluations, prompts)``."""
    runs = points[(points.method == method) & (points.recipe == recipe)]
    if runs.empty:
        raise ValueError(f"no runs of {method!r} on {recipe!r}: have "
                         f"{sorted(set(zip(points.method, points.recipe, strict=True)))}")
    out = {}
    for keys, run in runs.sort_values("step").groupby(RUN, sort=False):
        g = np.stack([per_prompt[(*keys, s)] for s in run.step])
        out[keys[-1]] = (run.kl.to_numpy(), run.seconds.to_numpy(), g - g[0])
    return out


def at_kl(kls: np.ndarray, gains: np.ndarray, kl: float) -> np.ndarray | None:
    """Per-prompt gains where the run's KL first reaches ``kl``, interpolated linearly
    between the two evaluations around it; ``None`` if the run never gets there."""
    for i in range(1, len(kls)):
        if kls[i] >= kl:
            w = (kl - kls[i - 1]) / (kls[i] - kls[i - 1]) if kls[i] > kls[i - 1] else 1.0
            w = min(max(w, 0.0), 1.0)
            return (1 - w) * gains[i - 1] + w * gains[i]
    return None


def gains_at_kl(points: pd.DataFrame, per_prompt: dict[tuple, np.ndarray], method: str,
                recipe: str, kl: float) -> np.ndarray | None:
    """``(seeds, prompts)`` gains of ``method`` at ``kl``, or ``None`` if a seed never reached
    it (a comparison there would rest on the runs that happened to go further)."""
    rows = [at_kl(k, g, kl) for k, _, g in gain_curves(points, per_prompt, method, recipe).values()]
    return None if any(r is None for r in rows) else np.stack(rows)


def matched_kl(points: pd.DataFrame, per_prompt: dict[tuple, np.ndarray], kls: list[float],
               a: tuple[str, str], b: tuple[str, str]) -> pd.DataFrame:
    """At each KL in ``kls``: the gain over SFT of ``a`` and of ``b`` (method, recipe), each
    with its 95% interval, and ``b - a`` paired by seed and prompt, with the verdict. KL
    values some seed of either method never reached are left out."""
    rows = []
    for kl in kls:
        ga, gb = (gains_at_kl(points, per_prompt, *m, kl) for m in (a, b))
        if ga is None or gb is None:
            continue
        zero = np.zeros_like(ga)
        ea, eb, d = (stats.paired_diff(zero, ga), stats.paired_diff(zero, gb),
                     stats.paired_diff(ga, gb))
        rows.append({"KL": kl, f"{a[0]} gain": str(ea), f"{b[0]} gain": str(eb),
                     f"{b[0]} − {a[0]}": str(d),
                     "verdict": stats.verdict(d, f"{b[0]} ahead", f"{a[0]} ahead"),
                     "diff": d})
    return pd.DataFrame(rows)


def noise_floor(points: pd.DataFrame, per_prompt: dict[tuple, np.ndarray]) -> dict[str, float]:
    """The SFT model re-evaluated under several sampling seeds: the spread of its mean gold
    (std over seeds) and the 95% half-width of a paired difference between two of its
    evaluations — how far two evaluations of the *same* model drift apart."""
    floor = points[points.method == "SFT (noise floor)"].sort_values("seed")
    if len(floor) < 2:
        raise ValueError("the noise floor needs the SFT model under at least two seeds")
    s = [per_prompt[tuple(r[RUN + ["step"]])] for _, r in floor.iterrows()]
    halves = [(stats.paired_diff(s[0], x).hi - stats.paired_diff(s[0], x).lo) / 2 for x in s[1:]]
    return {"std": float(floor.gold.std(ddof=1)), "mean": float(floor.gold.mean()),
            "paired_half_width": float(np.mean(halves)), "seeds": len(floor)}


def seconds_to_gain(points: pd.DataFrame, per_prompt: dict[tuple, np.ndarray], method: str,
                    recipe: str, gain: float) -> list[float]:
    """Per seed, the CPU seconds of training until the mean gain over SFT first reaches
    ``gain`` (linear between evaluations; NaN if it never does)."""
    out = []
    for _, secs, g in gain_curves(points, per_prompt, method, recipe).values():
        m = g.mean(axis=1)
        hit = np.nonzero(m >= gain)[0]
        if hit.size == 0 or hit[0] == 0:
            out.append(float("nan") if hit.size == 0 else 0.0)
            continue
        i = hit[0]
        w = (gain - m[i - 1]) / (m[i] - m[i - 1])
        out.append(float(secs[i - 1] + w * (secs[i] - secs[i - 1])))
    return out


def final_gains(points: pd.DataFrame, per_prompt: dict[tuple, np.ndarray], method: str,
                recipe: str) -> np.ndarray:
    """``(seeds, prompts)`` gains over SFT at each seed's last evaluation."""
    return np.stack([g[-1] for _, _, g in gain_curves(points, per_prompt, method,
                                                      recipe).values()])


def gain_points(points: pd.DataFrame, per_prompt: dict[tuple, np.ndarray]) -> pd.DataFrame:
    """Every evaluation as (KL, gain over SFT), averaged over seeds: one row per method,
    recipe, setting and step. A trained run's gain is over its own step 0; best-of-N's over
    best-of-1 of the same seed (a plain SFT sample of the same draw)."""
    rows = []
    trained = points[~points.method.isin(["best-of-N", "SFT (noise floor)"])]
    for (method, recipe), _ in trained.groupby(["method", "recipe"], sort=False):
        curves = gain_curves(points, per_prompt, method, recipe)
        run = points[(points.method == method) & (points.recipe == recipe)]
        setting = run.setting.iloc[0]
        for i, step in enumerate(sorted(run.step.unique())):
            rows.append({"method": method, "recipe": recipe, "setting": setting, "step": step,
                         "kl": np.mean([k[i] for k, _, _ in curves.values()]),
                         "gain": np.mean([g[i].mean() for _, _, g in curves.values()])})
    bon = points[points.method == "best-of-N"]
    for setting, group in bon.groupby("setting", sort=False):
        gains = [per_prompt[tuple(r[RUN + ["step"]])].mean()
                 - per_prompt[("best-of-N", "N=1", r.recipe, r.seed, 0)].mean()
                 for _, r in group.iterrows()]
        rows.append({"method": "best-of-N", "recipe": group.recipe.iloc[0], "setting": setting,
                     "step": 0, "kl": group.kl.mean(), "gain": float(np.mean(gains))})
    return pd.DataFrame(rows)


def beaten_share(gains: pd.DataFrame, target: str, by: str, margin: float = 0.0) -> float:
    """Share of ``target``'s trained points (step > 0; any best-of-N point but N=1) that some
    point of ``by`` beats on both axes: less KL, and a gain larger by more than ``margin``."""
    def trained_only(g: pd.DataFrame) -> pd.DataFrame:
        return g[(g.step > 0) | ((g.method == "best-of-N") & (g.setting != "N=1"))]

    t, b = (trained_only(gains[gains.method == m]) for m in (target, by))
    if t.empty or b.empty:
        raise ValueError(f"no trained points for {target!r} or {by!r}")
    return float(np.mean([any((y.kl < x.kl) and (y.gain > x.gain + margin)
                              for _, y in b.iterrows()) for _, x in t.iterrows()]))


# --- per-prompt and per-pair scores of the sweeps and variants (experiments/sweeps.py, variants.py)


def _select(long: pd.DataFrame, where: dict) -> pd.DataFrame:
    for col, val in where.items():
        long = long[np.isclose(long[col], val)] if isinstance(val, float) else \
            long[long[col] == val]
    return long


def score_matrix(long: pd.DataFrame, value: str = "gold", index: str = "prompt",
                 **where) -> np.ndarray:
    """``value`` of the long-format rows matching ``where`` (column=value) as an array of shape
    (seeds, ``index``): what ``stats.paired_diff`` takes. Raises if nothing matches."""
    sel = _select(long, where)
    if sel.empty:
        raise ValueError(f"no rows match {where}")
    return sel.pivot(index="seed", columns=index, values=value).sort_index().to_numpy(float)


def paired(long: pd.DataFrame, a: dict, b: dict, value: str = "gold",
           index: str = "prompt") -> stats.Estimate:
    """``b - a`` on the same prompts (or pairs) and seeds, with its bootstrap 95% interval over
    seeds and prompts; ``a`` and ``b`` select rows as ``score_matrix``'s ``where``."""
    return stats.paired_diff(score_matrix(long, value, index, **a),
                             score_matrix(long, value, index, **b))


def mean_over(long: pd.DataFrame, value: str, index: str = "pair", **where) -> stats.Estimate:
    """The mean of ``value`` over seeds and ``index`` with its bootstrap 95% interval (a
    paired difference against zero)."""
    m = score_matrix(long, value, index, **where)
    return stats.paired_diff(np.zeros_like(m), m)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def pair_agreement(scored: pd.DataFrame) -> np.ndarray:
    """(seeds, pairs): 1 where the reward margin has the sign of the gold margin, 0 where not,
    NaN where the gold totals are equal (a tie has no right order)."""
    r = score_matrix(scored.assign(m=scored.r_chosen - scored.r_rejected), "m", "pair")
    g = score_matrix(scored.assign(m=scored.gold_chosen - scored.gold_rejected), "m", "pair")
    return np.where(g == 0, np.nan, (np.sign(r) == np.sign(g)).astype(float))


def gold_agreement(scored: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                   ) -> dict[str, stats.Estimate]:
    """How well a reward orders held-out pairs as the gold judge does. ``scored``: one row per
    pair and seed with ``r_chosen``, ``r_rejected``, ``gold_chosen``, ``gold_rejected``.

    - ``pair agreement``: the share of pairs with unequal gold totals whose reward margin has
      the sign of the gold margin;
    - ``rank correlation``: Spearman's correlation of the reward margin with the gold margin.

    Both look at the two responses of one prompt only, so a reward that is right up to a
    constant per prompt (DPO's implicit reward) is not penalised for that constant. Intervals:
    bootstrap over seeds and pairs (the same pair draw for every seed)."""
    r = score_matrix(scored.assign(m=scored.r_chosen - scored.r_rejected), "m", "pair")
    g = score_matrix(scored.assign(m=scored.gold_chosen - scored.gold_rejected), "m", "pair")
    agree = pair_agreement(scored)
    rng = np.random.default_rng(seed)
    seeds, pairs = r.shape
    boots = []
    for _ in range(n_boot):
        s, p = rng.integers(0, seeds, seeds), rng.integers(0, pairs, pairs)
        boots.append(np.mean([_spearman(r[i, p], g[i, p]) for i in s]))
    rho = float(np.mean([_spearman(r[i], g[i]) for i in range(seeds)]))
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return {"pair agreement": stats.paired_diff(np.zeros_like(agree), agree, seed=seed),
            "rank correlation": stats.Estimate(rho, float(np.nanstd(boots, ddof=1)), float(lo),
                                               float(hi), int(r.size))}
