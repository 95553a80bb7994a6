"""Lesson 04's exercise must catch a wrong answer, and must not break a learner's run.

Each test runs a copy of the notebook under nbmake in a subprocess, cut after the
exercise's check and without the lesson's own test cells (the check needs only the
setup, helpers and fixtures before it), to keep it cheap.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit import services

LESSON = Path(__file__).parent.parent / "notebooks" / "04_message_queues.ipynb"
EXERCISE = "units-sold"
IDEMPOTENCY_GUARD = "    if claimed is None:\n        return False\n"


def lesson_up_to_the_check(tmp_path: Path, corrupt_solution: bool = False) -> Path:
    nb = nbformat.read(LESSON, as_version=4)
    check = next(i for i, c in enumerate(nb.cells) if c.source.startswith(f"%%check {EXERCISE}"))
    nb.cells = [
        cell
        for cell in nb.cells[: check + 1]
        if cell.cell_type == "code"
        and not cell.source.startswith("%%ipytest")
        and "ipytest.run(" not in cell.source
    ]
    if corrupt_solution:
        solution = next(c for c in nb.cells if c.source.startswith(f"%%solution {EXERCISE}"))
        assert IDEMPOTENCY_GUARD in solution.source, "the solution changed: update this test"
        # The bug the exercise is about: a redelivered order is counted again.
        solution.source = solution.source.replace(IDEMPOTENCY_GUARD, "")
    path = tmp_path / LESSON.name
    nbformat.write(nb, path)
    return path


def run_nbmake(path: Path, solutions: str) -> subprocess.CompletedProcess[str]:
    # The notebook runs on this process's services, passed as external URLs: a second
    # PostgreSQL and RabbitMQ started for each run would cost more than the run itself.
    urls = {
        services.specs()[name].url_env: services.get(name).url
        for name in ("postgres", "redis", "rabbitmq")
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "-q", "-p", "no:cacheprovider", str(path)],
        check=False,  # the exit code is what the tests look at
        capture_output=True,
        text=True,
        env={**os.environ, **urls, "LABKIT_BACKEND": "external", "LABKIT_SOLUTIONS": solutions},
        cwd=path.parent,
        timeout=300,
    )


@pytest.mark.skipif(not LESSON.exists(), reason="lesson 04 not written yet")
def test_a_consumer_that_counts_duplicates_fails_the_check_and_nbmake(tmp_path):
    result = run_nbmake(lesson_up_to_the_check(tmp_path, corrupt_solution=True), "run")
    assert result.returncode != 0, result.stdout[-3000:]
    assert f"'{EXERCISE}' is not solved yet" in result.stdout, result.stdout[-3000:]
    assert "test_a_duplicate_delivery_counts_once" in result.stdout, result.stdout[-3000:]


@pytest.mark.skipif(not LESSON.exists(), reason="lesson 04 not written yet")
def test_the_untouched_stub_does_not_break_a_learners_run(tmp_path):
    result = run_nbmake(lesson_up_to_the_check(tmp_path), "hide")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
