"""Simulated annotators: preference labels drawn from the gold judge, with noise.

A real labeler prefers the better response most of the time, not always. We model that
with Bradley–Terry: ``P(a ≻ b) = sigmoid((r(a) - r(b)) / temperature)`` with ``r`` the
gold total. ``temperature=0`` is a perfect labeler (ties broken by a coin flip); a larger
temperature flips more labels, mostly on pairs whose gold scores are close.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from . import judge
from .world import Prompt


def preference_probability(r_a: float, r_b: float, temperature: float) -> float:
    """Bradley–Terry probability that a labeler prefers ``a`` over ``b``."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return 0.5 if r_a == r_b else float(r_a > r_b)
    return 1 / (1 + math.exp(-(r_a - r_b) / temperature))


@dataclass(frozen=True)
class Label:
    chosen: str
    rejected: str
    p_chosen: float  # the Bradley–Terry probability of the label that was drawn
    gold_margin: float  # gold(chosen) - gold(rejected); negative when the label is noise


class Annotator:
    """Labels a pair of responses with a Bradley–Terry draw from the gold difference."""

    def __init__(self, temperature: float = 0.1, seed: int = 0):
        preference_probability(0.0, 0.0, temperature)  # validates the temperature
        self.temperature = temperature
        self.rng = random.Random(seed)

    def label(self, prompt: str | Prompt, a: str, b: str,
              finished: tuple[bool, bool] = (True, True)) -> Label:
        """``finished``: whether each response ended (a sample cut at the token limit
        scores 0, as the gold judge scores it)."""
        r_a = judge.score(prompt, a, finished[0]).total
        r_b = judge.score(prompt, b, finished[1]).total
        p_a = preference_probability(r_a, r_b, self.temperature)
        if self.rng.random() < p_a:
            return Label(a, b, p_a, r_a - r_b)
        return Label(b, a, 1 - p_a, r_b - r_a)
