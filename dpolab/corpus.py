"""World documents: the text the tiny base model is pretrained on.

Like a web crawl, the corpus holds encyclopedia-style facts (some as headlines in
capitals), arithmetic tables, how-to
pages (harmful ones included), letters, film reviews, and forum threads whose answers
come from the demonstrator with the web's mixture of flaws. It holds no chat-formatted
dialogues: the chat format is what SFT teaches. Forum threads use training prompts only,
so held-out prompts stay unseen.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from . import world
from .demonstrator import WEB_MIXTURE, Demonstrator, Mixture


def _fact_doc(rng: random.Random) -> str:
    if rng.random() < 0.5:
        country = rng.choice(sorted(world.COUNTRIES))
        cap = world.COUNTRIES[country]
        return rng.choice((
            f"{country} is a country. Its capital is {cap}.",
            f"The capital of {country} is {cap}. Many people visit {cap} each year.",
            f"{cap} is the capital of {country}. {cap} is a busy city.",
        ))
    creature = rng.choice(sorted(world.CREATURES))
    color = world.CREATURES[creature]
    return rng.choice((
        f"A {creature} is a small creature. Every {creature} is {color}.",
        f"The {creature} is {color}. You can spot a {creature} by its {color} coat.",
        f"If you see a {color} animal, it may be a {creature}.",
    ))


def _headline_doc(rng: random.Random) -> str:
    """A fact shouted in capitals, as headlines are."""
    return _fact_doc(rng).upper()


def _arith_doc(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(2, 5)):
        a, b = rng.randint(0, world.MAX_OPERAND), rng.randint(0, world.MAX_OPERAND)
        if rng.random() < 0.5:
            lines.append(f"{a} plus {b} is {a + b}.")
        else:
            a, b = max(a, b), min(a, b)
            lines.append(f"{a} minus {b} is {a - b}.")
    return " ".join(lines)


def _howto_doc(rng: random.Random) -> str:
    verb = rng.choice(world.HARMFUL_VERBS + world.BENIGN_VERBS)
    s1, s2 = world.HOWTO_STEPS[verb]
    return f"How to {verb} a {rng.choice(world.OBJECTS)}. First {s1}, then {s2}."


def _letter_doc(rng: random.Random) -> str:
    name, gift = rng.choice(world.NAMES), rng.choice(world.GIFTS)
    if rng.random() < 0.6:
        return f"Dear {name}, thank you for the {gift}. I hope to see you soon."
    return f"{name}, the {gift} was useless. Whatever."


def _forum_doc(rng: random.Random, demo: Demonstrator, prompts: Iterator[world.Prompt]) -> str:
    prompt = next(prompts)
    return f"Q: {prompt.text}\nA: {demo.respond(prompt)}"


def _review_doc(rng: random.Random, demo: Demonstrator, prompts: Iterator[world.Prompt]) -> str:
    title = rng.choice(world.TITLES)
    task = world.Task("sentiment", "review",
                      (("opening", rng.choice(world.REVIEW_OPENINGS).format(title=title)),))
    return f"{task.get('opening')} {demo.respond(task)}"


def documents(n: int, seed: int = 0, mixture: Mixture = WEB_MIXTURE) -> list[str]:
    """``n`` world documents, mixed in fixed proportions, reproducible from ``seed``."""
    rng = random.Random(seed)
    demo = Demonstrator(mixture, seed=seed + 1)
    prompts = world.World(seed).iter_prompts("train", world.ALIGNMENT_FAMILIES)
    kinds = [(_fact_doc, 0.17), (_headline_doc, 0.03), (_arith_doc, 0.15), (_howto_doc, 0.1),
             (_letter_doc, 0.05), (_forum_doc, 0.4), (_review_doc, 0.1)]
    makers, weights = zip(*kinds, strict=True)
    docs = []
    for make in rng.choices(makers, weights, k=n):
        if make in (_forum_doc, _review_doc):
            docs.append(make(rng, demo, prompts))
        else:
            docs.append(make(rng))
    return docs
