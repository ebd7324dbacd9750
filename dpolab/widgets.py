"""Figures behind the course's sliders: pure functions of their inputs.

A slider callback only calls one of these and ``plt.show()``, so every figure a learner
can reach with a slider is also reachable, and tested, without a widget.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from . import bandit as bd


def policy_figure(b: bd.Bandit, beta: float, policies: dict[str, torch.Tensor]) -> Figure:
    """Bars of ``pi_ref``, ``pi*`` at ``beta`` and each of ``policies`` over the responses;
    the title gives the KL to ``pi_ref`` and the expected reward of each."""
    shown = {"π_ref": b.pi_ref, "π* (exact)": bd.optimal_policy(b.rewards, b.pi_ref, beta)}
    shown.update(policies)
    fig, ax = plt.subplots(figsize=(9, 4))
    k, width = len(b.responses), 0.8 / len(shown)
    x = np.arange(k)
    for i, (name, pi) in enumerate(shown.items()):
        ax.bar(x + (i - (len(shown) - 1) / 2) * width, pi.tolist(), width, label=name)
    labels = [f"{textwrap.fill(y, 16)}\nr = {r:g}"
              for y, r in zip(b.responses, b.rewards.tolist(), strict=True)]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.15)
    ax.set_xlabel(f"response to {b.prompt!r}")
    ax.legend(loc="upper center", ncol=len(shown), fontsize=9)
    stats = "; ".join(f"{name}: KL {float(bd.kl(pi, b.pi_ref)):.3f}, "
                      f"E[r] {float(bd.expected_reward(pi, b.rewards)):.3f}"
                      for name, pi in shown.items() if name != "π_ref")
    reward_ref = float(bd.expected_reward(b.pi_ref, b.rewards))
    ax.set_title(f"β = {beta:.3g} (π_ref: E[r] {reward_ref:.3f})\n{stats}", fontsize=10)
    fig.tight_layout()
    return fig


def margin_figure(beta: float, h_max: float = 20.0) -> Figure:
    """The DPO loss ``-log sigmoid(beta h)`` and its gradient weight ``sigmoid(-beta h)``
    against the margin ``h`` in ``[-h_max, h_max]``."""
    h = torch.linspace(-h_max, h_max, 401, dtype=torch.float64)
    fig, (ax_loss, ax_weight) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(h, bd.margin_loss(h, beta))
    ax_loss.set_title(f"loss −log σ(βh), β = {beta:.3g}")
    ax_loss.set_ylabel("loss")
    ax_weight.plot(h, bd.gradient_weight(h, beta), color="C1")
    ax_weight.set_title(f"gradient weight σ(−βh), β = {beta:.3g}")
    ax_weight.set_ylabel("weight")
    ax_weight.set_ylim(-0.02, 1.02)
    for ax in (ax_loss, ax_weight):
        ax.set_xlabel("margin h = log-ratio(chosen) − log-ratio(rejected)")
        ax.axvline(0, color="grey", lw=0.5)
    fig.tight_layout()
    return fig
