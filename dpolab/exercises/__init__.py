"""Exercises: the learner writes the code, a check says what is wrong with it.

Each notebook's checks live in ``dpolab.exercises.nbXX``; the worked solutions, the back of
the book, in ``dpolab.solutions.nbXX``. A check runs the learner's function on small inputs
and answers in one line: correct, *what* is wrong in terms of the concept, or "not done
yet" while the stub is untouched. It returns the function the notebook carries on with:
the learner's when it is right, the worked solution otherwise, so every notebook runs top
to bottom whatever state its exercises are in.

A check is a *diagnosis*: a function that calls the learner's code and raises ``Wrong``
with the sentence to show. ``Exercise`` turns it into the check the notebook calls.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

__all__ = ["Exercise", "NotDone", "Verdict", "Wrong", "close"]


class Wrong(AssertionError):
    """The learner's answer is wrong; the message says what, in terms of the concept."""


class NotDone(Exception):
    """The learner's answer is still the stub (raised ``NotImplementedError`` or gave ``None``
    or ``...``)."""


@dataclass(frozen=True)
class Verdict:
    exercise: str
    status: Literal["correct", "wrong", "not done"]
    message: str

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    def __str__(self) -> str:
        mark = {"correct": "✓", "wrong": "✗", "not done": "…"}[self.status]
        return f"{mark} {self.exercise}: {self.message}"


def _where(solution: Callable) -> str:
    solution = inspect.unwrap(solution)  # a decorated solution lives where it was written
    path = Path(inspect.getfile(solution))
    return f"dpolab/solutions/{path.name}, `{solution.__name__}`"


def _checked(fn: Callable) -> Callable:
    """``fn`` with a stub's tell-tale results (``None``, ``...``) turned into ``NotDone``."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            out = fn(*args, **kwargs)
        except NotImplementedError as e:
            raise NotDone from e
        if out is None or out is Ellipsis:
            raise NotDone
        return out

    return call


class Exercise:
    """A check: ``diagnose(fn)`` raises ``Wrong`` when ``fn`` is wrong; ``solution`` is what
    the notebook uses until the learner's answer passes.

    Calling the exercise on the learner's function prints the verdict and returns the
    function to carry on with. The check never moves the notebook's random state, so the
    cells after it give the same numbers whatever the learner wrote."""

    def __init__(self, name: str, diagnose: Callable[[Callable], None], solution: Callable,
                 success: str = "correct.") -> None:
        self.name, self.diagnose, self.solution, self.success = name, diagnose, solution, success

    def verdict(self, fn: Callable | None) -> Verdict:
        where = _where(self.solution)
        not_done = Verdict(self.name, "not done",
                           f"not done yet. The worked solution is in {where}; the notebook "
                           "carries on with it.")
        if fn is None or fn is Ellipsis:
            return not_done
        py, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                self.diagnose(_checked(fn))
        except NotDone:
            return not_done
        except Wrong as e:
            return Verdict(self.name, "wrong", f"{e} (The notebook carries on with the worked "
                                               f"solution, {where}.)")
        except Exception as e:  # the learner's code crashed: say how, not a traceback
            return Verdict(self.name, "wrong",
                           f"your code raised {type(e).__name__}: {e}. (The notebook carries "
                           f"on with the worked solution, {where}.)")
        finally:
            random.setstate(py)
            np.random.set_state(np_state)
        return Verdict(self.name, "correct", self.success)

    def __call__(self, fn: Callable | None) -> Callable:
        v = self.verdict(fn)
        print(v)
        return fn if v.correct else self.solution


def close(a: Any, b: Any, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """``a`` and ``b`` agree as numbers or tensors, with the same shape."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))
