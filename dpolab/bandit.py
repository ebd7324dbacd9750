"""DPO on a bandit: one prompt, a handful of responses, everything computable exactly.

With a finite set of responses the KL-regularised optimum of Rafailov et al. (2023),
``pi*(y) ∝ pi_ref(y) exp(r(y) / beta)``, is a softmax we can evaluate, so DPO trained on
sampled preferences can be checked against it. The policy is a free softmax over the
responses (one logit each), the smallest model that can represent any distribution.

Conventions: probabilities and rewards are 1-D tensors over the responses (a policy may
carry leading batch dimensions, e.g. one row per training step); ``beta > 0`` and a larger
``beta`` keeps the policy closer to the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .losses import dpo_loss
from .optim import adamw_with_schedule


@dataclass(frozen=True)
class Bandit:
    """A prompt, its candidate responses, their rewards and the reference policy."""

    prompt: str
    responses: tuple[str, ...]
    rewards: torch.Tensor  # r(y), float64, one per response
    pi_ref: torch.Tensor  # pi_ref(y), float64, sums to 1

    def __post_init__(self):
        k = len(self.responses)
        if self.rewards.shape != (k,):
            raise ValueError(f"rewards must have shape ({k},), one per response; "
                             f"got {tuple(self.rewards.shape)}")
        check_policy(self.pi_ref, "pi_ref", k)


def example() -> Bandit:
    """The lesson's bandit: an arithmetic question and six answers a chat model might give.

    The reference (think of an SFT model) mostly answers correctly but tersely, seldom
    gives the best answer, and sometimes is wrong, refuses or wanders off topic."""
    rows = [  # response, reward, pi_ref
        ("12.", 2.0, 0.35),
        ("7 + 5 = 12. Happy to help!", 2.5, 0.05),
        ("12, obviously. Use a calculator.", 0.5, 0.15),
        ("13.", -1.0, 0.25),
        ("I can't help with that.", -1.5, 0.10),
        ("Numbers are fun! Let's talk about cars.", -2.0, 0.10),
    ]
    return Bandit(
        prompt="What is 7 + 5?",
        responses=tuple(r[0] for r in rows),
        rewards=torch.tensor([r[1] for r in rows], dtype=torch.float64),
        pi_ref=torch.tensor([r[2] for r in rows], dtype=torch.float64),
    )


def check_policy(pi: torch.Tensor, name: str, k: int | None = None) -> None:
    """Raise a ValueError unless ``pi`` is a probability vector (over ``k`` responses)."""
    if pi.ndim != 1 or (k is not None and pi.shape[0] != k):
        want = f"({k},)" if k is not None else "(k,)"
        raise ValueError(f"{name} must be a 1-D probability vector of shape {want}; "
                         f"got shape {tuple(pi.shape)}")
    if (pi < 0).any() or abs(float(pi.sum()) - 1.0) > 1e-6:
        raise ValueError(f"{name} must be non-negative and sum to 1; got {pi.tolist()}")


def _column(beta: float | torch.Tensor) -> torch.Tensor:
    """``beta`` as a float64 column, shape (1,) or (m, 1), after checking it is positive."""
    beta = torch.as_tensor(beta, dtype=torch.float64)
    if beta.ndim > 1 or not (beta > 0).all():
        raise ValueError(f"beta must be a positive number or a 1-D tensor of them; got {beta}")
    return beta.unsqueeze(-1)


# --- The KL-regularised objective and its optimum -------------------------------------


def optimal_policy(rewards: torch.Tensor, pi_ref: torch.Tensor,
                   beta: float | torch.Tensor) -> torch.Tensor:
    """``pi*(y) = pi_ref(y) exp(r(y)/beta) / Z``: the maximiser of ``E[r] - beta KL(pi||pi_ref)``.

    Computed as a softmax of ``log pi_ref + r / beta`` so that small ``beta`` does not
    overflow. A 1-D tensor of betas gives one row per beta."""
    return torch.softmax(torch.log(pi_ref) + rewards / _column(beta), dim=-1)


def expected_reward(pi: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """``E_{y~pi}[r(y)]`` (over the last dimension)."""
    return (pi * rewards).sum(-1)


def kl(pi: torch.Tensor, pi_ref: torch.Tensor) -> torch.Tensor:
    """``KL(pi || pi_ref) = sum_y pi(y) log(pi(y) / pi_ref(y))``, with ``0 log 0 = 0``."""
    terms = pi * (torch.log(pi) - torch.log(pi_ref))
    return torch.where(pi > 0, terms, torch.zeros_like(terms)).sum(-1)


def objective(pi: torch.Tensor, rewards: torch.Tensor, pi_ref: torch.Tensor,
              beta: float) -> torch.Tensor:
    """The RLHF objective ``E_pi[r] - beta KL(pi || pi_ref)`` that ``optimal_policy`` maximises."""
    return expected_reward(pi, rewards) - beta * kl(pi, pi_ref)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``TV(p, q) = 1/2 sum_y |p(y) - q(y)|``: the largest gap in probability of any event."""
    return 0.5 * (p - q).abs().sum(-1)


# --- Preferences ----------------------------------------------------------------------


def preference_probability(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry: ``P(a ≻ b) = sigmoid(r(a) - r(b))``."""
    return torch.sigmoid(r_a - r_b)


def sample_pairs(rewards: torch.Tensor, pi_ref: torch.Tensor, n: int,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` labelled pairs: two different responses drawn from ``pi_ref``, the winner drawn
    from Bradley–Terry on ``rewards``. Returns ``(chosen, rejected)`` response indices.

    Drawing the pair without replacement skips ties (``y1 == y2``), which carry no
    preference; it changes how often each pair is compared, not DPO's fixed point."""
    check_policy(pi_ref, "pi_ref", rewards.shape[0])
    if n < 1:
        raise ValueError(f"n must be a positive number of pairs; got {n}")
    g = torch.Generator().manual_seed(seed)
    ab = torch.multinomial(pi_ref.expand(n, -1), 2, replacement=False, generator=g)
    a, b = ab[:, 0], ab[:, 1]
    a_wins = torch.rand(n, generator=g, dtype=rewards.dtype) < preference_probability(
        rewards[a], rewards[b])
    return torch.where(a_wins, a, b), torch.where(a_wins, b, a)


# --- The losses, as functions of the margin -------------------------------------------
# DPO itself is ``losses.dpo_loss``: ``margin_loss(losses.margin(...), beta)``.


def margin_loss(h: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """``-log sigmoid(beta * h)``: the Bradley–Terry negative log-likelihood of a margin ``h``."""
    return -F.logsigmoid(beta * h)


def gradient_weight(h: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """``sigmoid(-beta * h)``: how hard a pair pushes, ``d loss / d h = -beta * weight``.

    Near 1 when the implicit reward orders the pair wrongly, near 0 once it is right."""
    return torch.sigmoid(-beta * h)


def reference_free_loss(logps_chosen: torch.Tensor, logps_rejected: torch.Tensor,
                        beta: float | torch.Tensor) -> torch.Tensor:
    """``-log sigmoid(beta * (log pi(y_w) - log pi(y_l)))``: DPO with the reference dropped.

    It equals DPO with a uniform reference, so its fixed point is ``∝ exp(r / beta)``:
    the policy forgets ``pi_ref`` and ``beta`` no longer measures distance to it."""
    return margin_loss(logps_chosen - logps_rejected, beta)


# --- Training a softmax policy on pairs -----------------------------------------------


@dataclass
class Fit:
    """A trained policy and the policy after every optimizer step (row 0: the start).

    Trained for one beta: ``policy`` is (k,); for a 1-D tensor of m betas, (m, k)."""

    policy: torch.Tensor  # (k,) or (m, k)
    trajectory: torch.Tensor  # (steps + 1, k) or (steps + 1, m, k)
    losses: torch.Tensor  # (steps,) or (steps, m)


def train_policy(chosen: torch.Tensor, rejected: torch.Tensor, pi_ref: torch.Tensor,
                 beta: float | torch.Tensor, reference_free: bool = False, steps: int = 800,
                 lr: float = 0.3) -> Fit:
    """Fit a softmax policy (one logit per response, starting at ``pi_ref``) to the pairs
    by full-batch AdamW (no weight decay, learning rate decayed linearly to 0) on the mean
    DPO loss, or the reference-free loss.

    Repeated pairs are grouped and weighted by their count: the same mean loss over at most
    ``k * (k - 1)`` distinct pairs instead of ``n``. A 1-D tensor of betas trains one
    independent policy per beta at once (Adam updates each logit on its own)."""
    column = _column(beta)
    check_policy(pi_ref, "pi_ref")
    if chosen.shape != rejected.shape or chosen.ndim != 1:
        raise ValueError(f"chosen and rejected must be 1-D index tensors of equal length; "
                         f"got shapes {tuple(chosen.shape)} and {tuple(rejected.shape)}")
    k = pi_ref.shape[0]
    for name, idx in (("chosen", chosen), ("rejected", rejected)):
        if len(idx) and not ((idx >= 0) & (idx < k)).all():
            raise ValueError(f"{name} must hold response indices in [0, {k}); "
                             f"got values from {int(idx.min())} to {int(idx.max())}")
    pairs, counts = torch.unique(torch.stack([chosen, rejected], 1), dim=0, return_counts=True)
    win, lose, weights = pairs[:, 0], pairs[:, 1], counts / counts.sum()
    ref_logps = torch.log(pi_ref)
    logits = ref_logps.expand(column.shape[0], -1).clone().requires_grad_(True)
    opt, schedule = adamw_with_schedule([logits], lr=lr, total_steps=steps)
    trajectory, losses = [torch.softmax(logits.detach(), -1)], []
    for _ in range(steps):
        logps = torch.log_softmax(logits, -1)
        if reference_free:
            per_pair = reference_free_loss(logps[:, win], logps[:, lose], column)
        else:
            per_pair = dpo_loss(logps[:, win], logps[:, lose], ref_logps[win], ref_logps[lose],
                                column)
        loss = (weights * per_pair).sum(-1)  # the mean loss over all n pairs, per beta
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        schedule.step()
        losses.append(loss.detach())
        trajectory.append(torch.softmax(logits.detach(), -1))
    fit = Fit(trajectory[-1], torch.stack(trajectory), torch.stack(losses))
    if torch.as_tensor(beta).ndim == 0:  # one beta: drop the m axis
        fit = Fit(fit.policy[0], fit.trajectory[:, 0], fit.losses[:, 0])
    return fit
