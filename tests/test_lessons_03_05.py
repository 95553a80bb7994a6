"""Lessons 03 and 05: each exercise's check must catch a wrong answer, and spare a learner.

Each run is a copy of the lesson cut down to what its exercise needs — the cells before the
first section (setup, imports), the few cells the exercise uses from earlier sections, and
the exercise itself up to its check — run under nbmake in a subprocess. The subprocess
uses this process's services as external ones, so it starts none of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


@dataclass(frozen=True)
class Lesson:
    notebook: str
    exercise: str
    needs: tuple[str, ...]  # code that earlier cells define and the exercise uses
    wrong_line: str  # removed from the solution, the exercise must no longer be solved
    why: str

    @property
    def path(self) -> Path:
        return NOTEBOOKS / self.notebook


LESSONS = [
    Lesson(
        "03_api_integration.ipynb",
        "rename-owner-only",
        needs=("def replace_route",),
        wrong_line='assert stored == "Owner"',
        why="without the database check, a rename stored before the 403 goes unseen",
    ),
    Lesson(
        "05_microservices.ipynb",
        "slow-inventory",
        needs=("SEED_ORDER = {", "def buyer_headers"),
        wrong_line="assert elapsed < SLOW",
        why="without the time bound, a shop that retries a slow inventory three times passes",
    ),
]


def exercise_only(lesson: Lesson, tmp_path: Path, corrupt_solution: bool = False) -> Path:
    nb = nbformat.read(lesson.path, as_version=4)
    cells = nb.cells
    first_section = next(i for i, c in enumerate(cells) if c.source.startswith("## "))
    exercise = next(i for i, c in enumerate(cells) if c.source.startswith("## Exercise"))
    check = next(
        i for i, c in enumerate(cells) if c.source.startswith(f"%%check {lesson.exercise}")
    )
    needed = [
        c
        for c in cells[first_section:exercise]
        if c.cell_type == "code" and any(n in c.source for n in lesson.needs)
    ]
    assert len(needed) == len(lesson.needs), f"{lesson.notebook} changed: update `needs`"
    nb.cells = cells[:first_section] + needed + cells[exercise : check + 1]
    if corrupt_solution:
        solution = next(c for c in nb.cells if c.source.startswith(f"%%solution {lesson.exercise}"))
        kept = [line for line in solution.source.splitlines() if lesson.wrong_line not in line]
        assert len(kept) == len(solution.source.splitlines()) - 1, "the solution changed"
        solution.source = "\n".join(kept)
    path = tmp_path / lesson.notebook
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.exercise)
def test_a_wrong_solution_fails_the_check_and_nbmake(lesson, tmp_path, run_nbmake):
    path = exercise_only(lesson, tmp_path, corrupt_solution=True)
    result = run_nbmake(path, "run")
    assert result.returncode != 0, f"{lesson.why}, yet nbmake passed:\n{result.stdout[-3000:]}"
    assert f"'{lesson.exercise}' is not solved yet" in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.exercise)
def test_the_untouched_stub_does_not_break_a_learners_run(lesson, tmp_path, run_nbmake):
    result = run_nbmake(exercise_only(lesson, tmp_path), "hide")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
