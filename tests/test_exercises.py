"""The exercise framework: a check says correct, wrong (with the diagnosis) or not done, hands
the notebook the function to carry on with, and leaves the random state where it was."""

import random

import numpy as np
import pytest
import torch

from dpolab import exercises
from dpolab.exercises import Exercise, Wrong


def solution(x):
    return 2 * x


def diagnose(fn):
    torch.rand(3), random.random(), np.random.rand()  # a check may draw random numbers
    if fn(3) == 5:
        raise Wrong("you added 2 instead of doubling")
    if fn(3) != 6:
        raise Wrong("the result is not twice the input")


double = Exercise("doubling", diagnose, solution)


def test_correct_answer_is_used_and_said_so(capsys):
    def mine(x):
        return x + x

    assert double(mine) is mine
    assert capsys.readouterr().out.startswith("✓ doubling: correct.")


def test_wrong_answer_gets_its_diagnosis_and_the_solution_is_used(capsys):
    assert double(lambda x: x + 2) is solution
    out = capsys.readouterr().out
    assert out.startswith("✗ doubling: you added 2 instead of doubling")
    assert "worked solution" in out
    assert double.verdict(lambda x: x * 3).message.startswith("the result is not twice")


def test_stub_is_not_done_yet_and_says_where_the_solution_is():
    def stub(x):
        raise NotImplementedError

    def dots(x):
        ...

    for fn in (stub, dots, None):
        v = double.verdict(fn)
        assert v.status == "not done" and "not done yet" in v.message
        assert "test_exercises.py, `solution`" in v.message


def test_a_crash_is_reported_in_one_line_not_a_traceback():
    v = double.verdict(lambda x: x / 0)
    assert v.status == "wrong" and "ZeroDivisionError" in v.message


def test_a_check_leaves_the_random_state_alone():
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    double.verdict(solution)
    after = torch.rand(1).item(), random.random(), np.random.rand()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    assert after == (torch.rand(1).item(), random.random(), np.random.rand())


def test_close_compares_shapes_and_values():
    assert exercises.close([1.0, 2.0], torch.tensor([1.0, 2.0]))
    assert not exercises.close([1.0, 2.0], [1.0, 2.1])
    assert not exercises.close([1.0], [1.0, 1.0])


def all_exercises():
    import importlib
    import pkgutil

    import dpolab.exercises as package
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"dpolab.exercises.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, Exercise):
                yield pytest.param(info.name, obj, id=f"{info.name}.{name}")


@pytest.mark.parametrize(("notebook", "exercise"), list(all_exercises()))
def test_every_check_accepts_its_solution_and_calls_an_untouched_stub_not_done(notebook, exercise):
    """The solution passes its own check; a stub (raising, or giving ``None``) is "not done"
    and is pointed to the worked solution of its notebook."""
    assert exercise.verdict(exercise.solution).correct, exercise.verdict(exercise.solution)

    def stub(*args, **kwargs):
        raise NotImplementedError("your code here")

    for fn in (stub, lambda *a, **k: None):
        v = exercise.verdict(fn)
        assert v.status == "not done", v
        assert f"dpolab/solutions/{notebook}.py" in v.message
