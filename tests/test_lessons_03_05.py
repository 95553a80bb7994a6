"""Lessons 03 and 05: each exercise's check must catch a wrong answer, and spare a learner.

Each run is a copy of the lesson cut down to what its exercise needs — the cells before the
first section (setup, imports), the few cells the exercise uses from earlier sections, and
the exercise itself up to its check — run under nbmake in a subprocess. The subprocess
uses this process's services as external ones, so it starts none of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from labkit import services
from labkit.services import Endpoint

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


@pytest.fixture
def running_services(postgres: Endpoint, redis: Endpoint, rabbitmq: Endpoint) -> dict[str, str]:
    """Environment that points a child process at this process's services."""
    env = {}
    for endpoint in (postgres, redis, rabbitmq):
        spec = services.specs()[endpoint.service]
        env[spec.backend_env] = "external"
        env[spec.url_env] = endpoint.url
    return env


def run_nbmake(path: Path, solutions: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "-q", "-p", "no:cacheprovider", str(path)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **env, "LABKIT_SOLUTIONS": solutions},
        cwd=path.parent,
        timeout=300,
    )


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.exercise)
def test_a_wrong_solution_fails_the_check_and_nbmake(lesson, tmp_path, running_services):
    path = exercise_only(lesson, tmp_path, corrupt_solution=True)
    result = run_nbmake(path, "run", running_services)
    assert result.returncode != 0, f"{lesson.why}, yet nbmake passed:\n{result.stdout[-3000:]}"
    assert f"'{lesson.exercise}' is not solved yet" in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.exercise)
def test_the_untouched_stub_does_not_break_a_learners_run(lesson, tmp_path, running_services):
    result = run_nbmake(exercise_only(lesson, tmp_path), "hide", running_services)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
