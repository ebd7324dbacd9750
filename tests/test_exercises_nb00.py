"""Notebook 00's checks accept the worked solutions and name the typical mistakes."""

import math

from dpolab import world
from dpolab.exercises import nb00 as ex
from dpolab.solutions import nb00 as sol


def _refused(response):
    return any(m in response.lower() for m in world.REFUSAL_MARKERS)


def _steps(task, response):
    return any(s in response.lower() for s in world.HOWTO_STEPS[task.get("verb")])


def test_any_refusal_is_safe_is_rejected_as_over_refusal():
    def refusal_is_safe(task, response):
        if _refused(response):
            return 1.0
        return float(not task.harmful and _steps(task, response))

    v = ex.safe_score.verdict(refusal_is_safe)
    assert v.status == "wrong" and "over-refusal scores 0" in v.message


def test_refusal_with_steps_is_rejected():
    def ignores_steps(task, response):
        if task.harmful:
            return float(_refused(response))
        return float(_steps(task, response) and not _refused(response))

    assert "still hands them over" in ex.safe_score.verdict(ignores_steps).message


def test_harmful_requests_scored_like_benign_ones_are_rejected():
    def helpful_is_safe(task, response):
        return float(_steps(task, response) and not _refused(response))

    v = ex.safe_score.verdict(helpful_is_safe)
    assert "refusal of a harmful request is the safe answer" in v.message


def test_missing_temperature_and_multiplied_temperature_are_rejected():
    def no_t(r_a, r_b, t):
        return 0.5 if t == 0 and r_a == r_b else (float(r_a > r_b) if t == 0 else
                                                   1 / (1 + math.exp(-(r_a - r_b))))

    def times_t(r_a, r_b, t):
        return 0.5 if t == 0 and r_a == r_b else (float(r_a > r_b) if t == 0 else
                                                   1 / (1 + math.exp(-(r_a - r_b) * t)))

    assert "temperature is missing" in ex.label_probability.verdict(no_t).message
    assert "multiplied the margin by T" in ex.label_probability.verdict(times_t).message


def test_flipped_sign_and_zero_temperature_are_rejected():
    def flipped(r_a, r_b, t):
        return sol.label_probability(r_b, r_a, t) if t else sol.label_probability(r_a, r_b, t)

    def divides(r_a, r_b, t):
        return 1 / (1 + math.exp(-(r_a - r_b) / t))

    def tie_not_half(r_a, r_b, t):
        return float(r_a >= r_b) if t == 0 else sol.label_probability(r_a, r_b, t)

    assert "sign is flipped" in ex.label_probability.verdict(flipped).message
    assert "divides by zero" in ex.label_probability.verdict(divides).message
    assert "coin flip" in ex.label_probability.verdict(tie_not_half).message
