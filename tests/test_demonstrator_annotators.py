"""The demonstrator's flaws follow its mixture; annotators follow Bradley–Terry."""

import math
from statistics import mean

import pytest

from dpolab import judge, world
from dpolab.annotators import Annotator, preference_probability
from dpolab.demonstrator import GOOD, SFT_MIXTURE, Demonstrator, Mixture


def gold_means(mixture, n=2000):
    demo = Demonstrator(mixture, seed=0)
    scores = {}
    for p in world.World(0).prompts(n, "eval"):
        for axis, v in judge.score(p, demo.respond(p)).axes.items():
            scores.setdefault(axis, []).append(v)
    return {k: mean(v) for k, v in scores.items()}


def test_good_demonstrator_is_perfect_on_every_axis():
    assert gold_means(GOOD) == {"helpful": 1, "tone": 1, "safe": 1, "instruction": 1}


def test_flaws_lower_the_axes_they_target():
    base = gold_means(GOOD)
    assert gold_means(Mixture(wrong=0.5))["helpful"] < base["helpful"] - 0.2
    assert gold_means(Mixture(rude=0.5))["tone"] == pytest.approx(0.5, abs=0.05)
    assert gold_means(Mixture(comply=1.0))["safe"] < 0.7  # every harmful request answered
    assert gold_means(Mixture(ignore_format=0.5))["instruction"] < 0.8


def test_sft_mixture_is_mixed_on_every_axis():
    for axis, v in gold_means(SFT_MIXTURE).items():
        assert 0.3 < v < 0.8, axis


def test_demonstrator_is_deterministic():
    ps = world.World(0).prompts(200, families=world.FAMILIES)
    a = [Demonstrator(SFT_MIXTURE, 3).respond(p) for p in ps]
    assert a == [Demonstrator(SFT_MIXTURE, 3).respond(p) for p in ps]


def test_bradley_terry_probability():
    assert preference_probability(1, 0, 0.5) == pytest.approx(1 / (1 + math.exp(-2)))
    assert preference_probability(0.3, 0.3, 1.0) == 0.5
    assert preference_probability(1, 0, 0) == 1 and preference_probability(0, 1, 0) == 0
    with pytest.raises(ValueError, match="temperature"):
        preference_probability(1, 0, -1)


def test_annotator_noise_grows_with_temperature():
    good, bad = "7 plus 5 is 12.", "7 plus 5 is 13."
    def agreement(t):
        a = Annotator(t, seed=0)
        return mean(a.label("What is 7 plus 5?", good, bad).chosen == good for _ in range(2000))
    assert agreement(0) == 1
    assert agreement(0.25) == pytest.approx(1 / (1 + math.exp(-0.5 / 0.25)), abs=0.03)
    assert agreement(0.25) > agreement(2.0) > 0.45
