"""Guards on the lessons themselves: how they are stored and put together.

nbmake (in `make test`) runs every notebook; these checks catch what running cannot:
stored outputs, a lesson that skips labkit's setup (and so would swallow failing
tests), an exercise without its solution or check, a hard-coded service address.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
SETUP_CALL = "labkit.notebook.setup("
HARD_CODED = re.compile(r"(localhost|127\.0\.0\.1):(5432|6379|5672)|guest:guest|postgres:postgres")


def code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_lessons_exist_and_are_numbered():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        assert re.fullmatch(r"\d\d[a-z]?_[a-z0-9_]+\.ipynb", path.name), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    dirty = [i for i, c in enumerate(code_cells(path)) if c.outputs or c.execution_count]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_is_labkit_setup(path):
    first = code_cells(path)[0].source
    assert SETUP_CALL in first, (
        f"{path.name}: the first code cell must call labkit.notebook.setup(), "
        "or a failing %%ipytest cell would not fail the notebook"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_have_hidden_solution_and_check(path):
    cells = code_cells(path)
    solutions = {}
    checks = set()
    for cell in cells:
        first_line = cell.source.splitlines()[0] if cell.source else ""
        if first_line.startswith("%%solution"):
            name = first_line.split(maxsplit=1)[1].strip()
            solutions[name] = cell
            assert "solution" in cell.metadata.get("tags", []), f"{name}: tag the cell 'solution'"
            assert cell.metadata.get("jupyter", {}).get("source_hidden"), f"{name}: collapse it"
            assert "# BEGIN SOLUTION" in cell.source and "# END SOLUTION" in cell.source, name
        elif first_line.startswith("%%check"):
            checks.add(first_line.split(maxsplit=1)[1].strip())
    assert solutions, f"{path.name}: every lesson has at least one exercise"
    assert set(solutions) == checks, f"{path.name}: solutions {set(solutions)} vs checks {checks}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_hard_coded_service_addresses(path):
    for cell in code_cells(path):
        match = HARD_CODED.search(cell.source)
        assert not match, f"{path.name}: ask labkit for endpoints instead of {match.group(0)!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_exercise_cell_is_its_solutions_stub(path):
    """What a learner starts from is what `restore(name)` puts back: the solution's stub."""
    from labkit.exercises import make_stub

    cells = code_cells(path)
    for at, cell in enumerate(cells):
        if not cell.source.startswith("%%solution"):
            continue
        name = cell.source.split("\n", 1)[0].split(maxsplit=1)[1]
        mine = [c for c in cells[:at] if "exercise" in c.metadata.get("tags", [])]
        assert mine, f"{path.name}: tag the learner's cell of '{name}' 'exercise'"
        stub = make_stub(cell.source.split("\n", 1)[1])
        assert mine[-1].source.strip() == stub.strip(), (
            f"{path.name}: the cell before '{name}''s solution is not its stub:\n{stub}"
        )
        checks = [c for c in cells[at:] if c.source.startswith(f"%%check {name}")]
        assert checks and "check" in checks[0].metadata.get("tags", []), (
            f"{path.name}: tag '{name}''s check cell 'check'"
        )
