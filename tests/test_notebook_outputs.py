"""What the committed notebooks show a reader: exercises shipped as untouched stubs, test
plumbing kept in cell tags, and progress bars saved where they ended."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CHECK = re.compile(r"^\s*\w+\s*=\s*ex\.\w+\(my_\w+\)", re.M)


def code_cells(path):
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            yield "".join(cell["source"]), cell


def text_of(cell):
    parts = []
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        parts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_ships_as_a_stub_and_its_check_says_not_done(path):
    checks = [(src, cell) for src, cell in code_cells(path) if CHECK.search(src)]
    assert len(checks) >= 2, f"{path.name}: fewer than two exercise checks"
    for src, cell in checks:
        out = text_of(cell)
        assert "not done yet" in out, f"{path.name}: a check does not say 'not done':\n{src}"
        assert "nbval-check-output" in cell["metadata"].get("tags", []), src


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_plumbing_is_in_tags_and_bars_read_where_they_ended(path):
    for src, cell in code_cells(path):
        assert "NBVAL_CHECK_OUTPUT" not in src, f"{path.name}: use the nbval-check-output tag"
        assert not re.search(r"\b0%\|", text_of(cell)), f"{path.name}: a bar saved at 0%:\n{src}"
