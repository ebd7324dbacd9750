"""environment.yml must install what pyproject.toml declares: pyproject is the source of truth."""

import json
import re
import tomllib
from pathlib import Path

import yaml  # a dependency of transformers, datasets and accelerate
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name
CONDA_ONLY = {"python", "pip", "jupyterlab"}


def load():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return project, env


def conda_specs(env) -> dict[str, SpecifierSet]:
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
            out[name] = SpecifierSet(spec)
    return out


def test_only_conda_forge():
    _, env = load()
    assert env["channels"] == ["conda-forge"]


def test_same_packages_and_bounds_as_pyproject():
    project, env = load()
    wanted = {}
    for line in project["dependencies"]:
        req = Requirement(line)
        wanted[CONDA_NAMES.get(req.name, req.name)] = req.specifier
    have = conda_specs(env)
    assert {k: v for k, v in have.items() if k not in CONDA_ONLY} == wanted
    assert have["python"] == SpecifierSet(project["requires-python"])


def test_pip_installs_the_project():
    _, env = load()
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip == [['-e ".[test]"']]


def test_the_transformers_floor_reads_the_bundled_tokenizers():
    """The bundled tokenizers are saved in transformers 5's format (``TokenizersBackend``):
    4.57.3 refuses them ("Tokenizer class TokenizersBackend does not exist"), 5.0.0 loads
    them and the models, and samples the same tokens as the installed version."""
    project, _ = load()
    spec = next(Requirement(d).specifier for d in project["dependencies"]
                if Requirement(d).name == "transformers")
    assert spec.contains("5.0.0") and not spec.contains("4.57.3")
    for path in sorted((ROOT / "data").glob("*/tokenizer_config.json")):
        assert json.loads(path.read_text())["tokenizer_class"] == "TokenizersBackend", path
