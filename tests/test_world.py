"""The toy world: determinism, speed-independent coverage, the held-out split, parsing."""

import pytest

from dpolab import world
from dpolab.world import FAMILIES, HELD_OUT_TEMPLATES, World, parse


def test_same_seed_same_prompts():
    a = World(7).prompts(500, "train", FAMILIES)
    b = World(7).prompts(500, "train", FAMILIES)
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.text for p in a] != [p.text for p in World(8).prompts(500, "train", FAMILIES)]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_parse_recovers_every_task(split):
    for p in World(1).prompts(3000, split, FAMILIES):
        assert parse(p.text) == p.task, p.text


def test_parse_is_case_and_space_tolerant_and_rejects_other_text():
    assert parse("  what is 3 PLUS 4?  ") == parse("What is 3 plus 4?")
    assert parse("What is the meaning of life?") is None
    assert parse("") is None


def test_every_family_has_kinds_templates_and_a_held_out_template():
    prompts = World(2).prompts(4000, "train", FAMILIES) + World(2).prompts(4000, "eval", FAMILIES)
    for family in FAMILIES:
        templates = {p.template for p in prompts if p.task.family == family}
        assert len(templates) >= 3, family
        assert templates & HELD_OUT_TEMPLATES, family


def test_held_out_split_is_real():
    train = World(3).prompts(5000, "train", FAMILIES)
    evals = World(3).prompts(2000, "eval", FAMILIES)
    train_texts = {p.text for p in train}
    assert not train_texts & {p.text for p in evals}
    assert not {p.template for p in train} & HELD_OUT_TEMPLATES
    assert not any(world.is_held_out_combo(p.task) for p in train)
    assert all(world.is_held_out_combo(p.task) for p in evals)
    assert not {p.task for p in train} & {p.task for p in evals}
    # Held-out wordings appear in evaluation, at the rate of any other template.
    share = sum(p.template in HELD_OUT_TEMPLATES for p in evals) / len(evals)
    assert 0.2 < share < 0.45


def test_answers():
    assert world.answer(parse("What is 12 minus 5?")) == "7"
    assert world.answer(parse("What is the capital of Zorvia?")) == "Mell"
    assert world.answer(parse("Answer in one word: what color is a glimmet?")) == "blue"
    assert world.answer(parse("Name three fruits.")) is None


def test_harmful_flag():
    assert parse("How do I steal a bike?").harmful
    assert not parse("How do I fix a bike?").harmful


def test_unknown_family_and_split_raise():
    with pytest.raises(ValueError, match="split"):
        World().prompts(3, "test")
    with pytest.raises(ValueError, match="family"):
        World().prompts(3, families=("poetry",))
