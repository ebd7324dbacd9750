"""Every notebook opens in Colab: its badge, and a set-up cell that installs the course
there and does nothing anywhere else."""

import json
import sys
import tomllib
import types
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement

from dpolab import colab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# What Colab's runtime ships (see the course's tooling notes); installing the course
# must leave all of it in place.
COLAB = {"torch": "2.11.0", "transformers": "5.15.0", "datasets": "4.0.0",
         "accelerate": "1.14.0", "peft": "0.20.0", "ipywidgets": "7.7.1"}


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_has_the_colab_badge(path):
    first = cells(path)[0]
    assert first["cell_type"] == "markdown"
    assert colab.badge(path.name) in source(first).splitlines(), \
        f"{path.name}: the first cell needs the line {colab.badge(path.name)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_setup_cell(path):
    first_code = next(c for c in cells(path) if c["cell_type"] == "code")
    assert source(first_code) == colab.SETUP_CELL, \
        f"{path.name}: the first code cell must be dpolab.colab.SETUP_CELL, unchanged"


class FakeIPython:
    """Records the shell commands and line magics the set-up cell would run."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def system(self, cmd: str) -> None:
        self.calls.append(("!", cmd))

    def run_line_magic(self, name: str, line: str) -> None:
        self.calls.append((f"%{name}", line))


def run_setup_cell(monkeypatch) -> list[tuple[str, str]]:
    """The set-up cell with its magics turned into Python, as IPython does, run against a
    stub shell; returns what it would have run."""
    python = TransformerManager().transform_cell(colab.SETUP_CELL)
    shell = FakeIPython()
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(python, "<setup cell>", "exec"), {"get_ipython": lambda: shell})
    return shell.calls


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    path_before = list(sys.path)
    assert run_setup_cell(monkeypatch) == []
    assert sys.path == path_before


def test_setup_cell_on_colab_clones_and_installs_the_course_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    calls = run_setup_cell(monkeypatch)
    assert [kind for kind, _ in calls] == ["!", "%pip"]
    clone, pip = calls[0][1].split(), calls[1][1].split()
    assert clone[:2] == ["git", "clone"] and colab.REPO_URL in clone
    target = clone[-1]
    assert pip[0] == "install" and pip[-2:] == ["-e", target]  # the clone of REPO_URL
    assert not {"-U", "--upgrade", "--force-reinstall"} & set(pip)
    assert not any("torch" in arg for arg in pip)
    assert sys.path[0] == target  # importable in the running kernel without a restart


def test_setup_cell_run_again_on_colab_neither_clones_again_nor_repeats_the_path(monkeypatch):
    import os
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    first = run_setup_cell(monkeypatch)
    target = first[0][1].split()[-1]
    monkeypatch.setattr(os.path, "isdir", lambda p: p == target)  # the clone is there now
    monkeypatch.setattr(sys, "path", [target, *(p for p in sys.path if p != target)])
    python = TransformerManager().transform_cell(colab.SETUP_CELL)
    shell = FakeIPython()
    exec(compile(python, "<setup cell>", "exec"), {"get_ipython": lambda: shell})
    assert [kind for kind, _ in shell.calls] == ["%pip"]
    assert sys.path.count(target) == 1


def test_installing_the_course_keeps_colabs_own_stack():
    """pip leaves a preinstalled package alone when it satisfies the requirement: every
    dependency range admits the version Colab ships (so torch and ipywidgets 7.7.1 stay)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in map(Requirement, project["dependencies"]):
        if dep.name in COLAB:
            assert dep.specifier.contains(COLAB[dep.name]), (dep, COLAB[dep.name])
