"""The slider figures draw what they say: the right bars, curves and numbers in the title."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dpolab import bandit as bd  # noqa: E402
from dpolab import widgets  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_policy_figure_draws_each_policy_and_titles_kl_and_reward():
    b = bd.example()
    beta = 0.5
    other = torch.softmax(torch.arange(6, dtype=torch.float64), -1)
    fig = widgets.policy_figure(b, beta, {"mine": other})
    ax = fig.axes[0]
    bars = [[p.get_height() for p in c] for c in ax.containers]
    pi_star = bd.optimal_policy(b.rewards, b.pi_ref, beta)
    np.testing.assert_allclose(bars, [b.pi_ref.tolist(), pi_star.tolist(), other.tolist()])
    title = ax.get_title()
    assert title.startswith("β = 0.5")
    for pi in (pi_star, other):
        assert f"KL {float(bd.kl(pi, b.pi_ref)):.3f}" in title
        assert f"E[r] {float(bd.expected_reward(pi, b.rewards)):.3f}" in title
    assert ax.get_ylabel() == "probability" and "7 + 5" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["π_ref", "π* (exact)", "mine"]


def test_margin_figure_plots_loss_and_gradient_weight():
    beta = 2.0
    fig = widgets.margin_figure(beta, h_max=5.0)
    (loss_ax, weight_ax) = fig.axes
    h, loss = loss_ax.lines[0].get_data()
    _, weight = weight_ax.lines[0].get_data()
    assert h[0] == -5.0 and h[-1] == 5.0
    np.testing.assert_allclose(loss, np.log1p(np.exp(-beta * h)))
    np.testing.assert_allclose(weight, 1 / (1 + np.exp(beta * h)))
    for ax in (loss_ax, weight_ax):
        assert "β = 2" in ax.get_title() and ax.get_xlabel().startswith("margin h")
    assert loss_ax.get_ylabel() == "loss" and weight_ax.get_ylabel() == "weight"
