"""The demonstrator: writes responses of controllable, mixed quality.

It stands for the people and web pages a model learns from. A ``Mixture`` sets how often
each flaw appears: wrong answers, rudeness, compliance with harmful requests, refusal of
benign ones, ignored format constraints, off-topic notes, negative reviews. Its responses
make the pretraining forum posts and the SFT set, so the models start imperfect in ways
the gold judge measures, and preference learning has something to fix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import world
from .world import Prompt, Task


@dataclass(frozen=True)
class Mixture:
    """Probability of each flaw, drawn independently per response."""

    wrong: float = 0.0
    rude: float = 0.0
    comply: float = 0.0
    overrefuse: float = 0.0
    ignore_format: float = 0.0
    offtopic: float = 0.0
    negative: float = 0.5


GOOD = Mixture(negative=0.0)
# The mixture of the SFT demonstrations: about one flaw in three or four on every axis.
SFT_MIXTURE = Mixture(wrong=0.25, rude=0.25, comply=0.45, overrefuse=0.3, ignore_format=0.1,
                      offtopic=0.3, negative=0.5)
# The web the base model is pretrained on: worse than the SFT demonstrations.
WEB_MIXTURE = Mixture(wrong=0.4, rude=0.5, comply=0.6, overrefuse=0.3, ignore_format=0.6,
                      offtopic=0.5, negative=0.5)

RUDE_OPENERS = ("Ugh, ", "Whatever. ", "Obviously, ", "Ugh, fine. ")
RUDE_CLOSERS = (" Don't be so lazy.", " That was a stupid question.", " Stop being annoying.",
                " Shut up and read next time.")


class Demonstrator:
    """Writes a response to a world prompt under a ``Mixture`` of flaws."""

    def __init__(self, mixture: Mixture = SFT_MIXTURE, seed: int = 0):
        self.mixture = mixture
        self.rng = random.Random(seed)

    def respond(self, prompt: Prompt | Task) -> str:
        task = prompt.task if isinstance(prompt, Prompt) else prompt
        text = _WRITERS[task.kind](self, task)
        if task.family != "sentiment" and self._flip(self.mixture.rude):
            text = self._rudify(text)
        return text

    # -- helpers --------------------------------------------------------------------
    def _flip(self, p: float) -> bool:
        return self.rng.random() < p

    def _rudify(self, text: str) -> str:
        if self._flip(0.5):
            return self.rng.choice(RUDE_OPENERS) + text
        return text + self.rng.choice(RUDE_CLOSERS)

    def _answer(self, task: Task) -> str:
        """The right answer, or with probability ``wrong`` a plausible wrong one."""
        correct = world.answer(task)
        if not self._flip(self.mixture.wrong):
            return correct
        if task.kind == "arith":
            return str(max(0, int(correct) + self.rng.choice((-3, -2, -1, 1, 2, 3, 10))))
        pool = world.COUNTRIES.values() if task.kind == "capital" else world.COLORS
        return self.rng.choice(sorted(set(pool) - {correct}))

    # -- writers, one per task kind -----------------------------------------------------
    def _arith(self, task: Task) -> str:
        a, op, b = task.get("a"), task.get("op"), task.get("b")
        ans = self._answer(task)
        return self.rng.choice((f"{a} {op} {b} is {ans}.", f"{a} {op} {b} equals {ans}."))

    def _capital(self, task: Task) -> str:
        c, ans = task.get("country"), self._answer(task)
        return self.rng.choice((f"The capital of {c} is {ans}.", f"It is {ans}.",
                                f"{ans} is the capital of {c}."))

    def _color(self, task: Task) -> str:
        c, ans = task.get("creature"), self._answer(task)
        return self.rng.choice((f"A {c} is {ans}.", f"Every {c} is {ans}.",
                                f"The {c} is {ans}."))

    def _howto(self, task: Task) -> str:
        verb, obj = task.get("verb"), task.get("object")
        if self._flip(self.mixture.comply if task.harmful else 1 - self.mixture.overrefuse):
            s1, s2 = world.HOWTO_STEPS[verb]
            return self.rng.choice((f"To {verb} a {obj}, {s1}, then {s2}.",
                                    f"First {s1}, then {s2}. That is how to {verb} a {obj}."))
        return self.rng.choice(world.REFUSALS)

    def _formatted(self, task: Task) -> str:
        inner = world.inner_task(task)
        if self._flip(self.mixture.ignore_format):
            return _WRITERS[inner.kind](self, inner)
        ans = self._answer(inner)
        if task.kind == "one_word":
            return ans[0].upper() + ans[1:] + "."
        sentence = (f"The capital of {inner.get('country')} is {ans}." if inner.kind == "capital"
                    else f"A {inner.get('creature')} is {ans}.")
        return sentence.upper()

    def _list_three(self, task: Task) -> str:
        pool = world.LIST_CATEGORIES[task.get("category")]
        n = self.rng.choice((2, 4)) if self._flip(self.mixture.ignore_format) else 3
        items = self.rng.sample(pool, n)
        if self._flip(self.mixture.wrong):
            others = [v for k, vs in world.LIST_CATEGORIES.items() if k != task.get("category")
                      for v in vs]
            items[-1] = self.rng.choice(others)
        text = ", ".join(items[:-1]) + " and " + items[-1] + "."
        return text[0].upper() + text[1:]

    def _thanks(self, task: Task) -> str:
        name, gift = task.get("name"), task.get("gift")
        if self._flip(self.mixture.offtopic):
            return self.rng.choice((f"Dear {name}, I hope you are well.",
                                    "Thank you for everything you do."))
        return self.rng.choice((f"Dear {name}, thank you so much for the {gift}. It was very "
                                "kind of you.", f"Thank you, {name}! I love the {gift}.",
                                f"Dear {name}, the {gift} is lovely. Thanks a lot."))

    def _comfort(self, task: Task) -> str:
        name, item = task.get("name"), task.get("item")
        if self._flip(self.mixture.offtopic):
            return self.rng.choice(("I hope you have a good day.", f"{name}, things happen."))
        return self.rng.choice((f"I'm so sorry, {name}. I hope you find your {item} soon.",
                                f"Oh no, {name}! I hope you get your {item} back soon.",
                                f"That sounds hard, {name}. I'm sorry about your {item}."))

    def _review(self, task: Task) -> str:
        words = world.NEGATIVE_WORDS if self._flip(self.mixture.negative) else world.POSITIVE_WORDS
        w1, w2, w3 = self.rng.sample(words, 3)
        return self.rng.choice((f"{w1} and {w2}. The story was {w3}.",
                                f"{w1}. The acting was {w2} and the music {w3}.",
                                f"truly {w1}, with {w2} scenes and a {w3} ending."))


_WRITERS = {"arith": Demonstrator._arith, "capital": Demonstrator._capital,
            "color": Demonstrator._color, "howto": Demonstrator._howto,
            "one_word": Demonstrator._formatted, "capitals": Demonstrator._formatted,
            "list_three": Demonstrator._list_three, "thanks": Demonstrator._thanks,
            "comfort": Demonstrator._comfort, "review": Demonstrator._review}
