"""Each lesson exercise's check must catch a wrong answer, and must not break a learner's run.

Each run is a copy of the lesson cut down to what its exercise needs, run under nbmake in
a subprocess that uses this process's services as external ones (see `run_nbmake`):
- the wrong answer is the solution with the bug the exercise is about put back in; with
  solutions run (as in CI) its check, and so nbmake, must fail;
- the untouched stub, with solutions hidden (as for a learner), must leave nbmake green:
  the check says "not attempted yet" instead of failing the notebook.
The wrong answer's report must be one a learner can act on: the failed check in words, the
exercise's hint, and no traceback through the kit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from test_notebook_failures import run_keeping_outputs, shown

from labkit import services
from labkit.exercises import hint_of, readable
from labkit.services import sweep_containers

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


@dataclass(frozen=True)
class Exercise:
    notebook: str
    name: str
    bug: tuple[str, str]  # (text of the solution, what replaces it): the wrong answer
    why: str  # what the check would miss if nbmake passed the wrong answer
    # Code cells from the lesson's sections that the exercise uses; None keeps every code
    # cell before the check except test cells (their tests are not the exercise's).
    needs: tuple[str, ...] | None = None
    failing_test: str | None = None  # the check's test that must name the bug
    docker_image_of: str | None = None  # a lesson about containers: this service's image

    def cannot_run_here(self) -> str | None:
        """Why the check would skip here (it needs Docker and an image), or None."""
        if self.docker_image_of is None:
            return None
        image = services.specs()[self.docker_image_of].image
        if not services.engine_answers():
            return f"{self.name}'s check needs a Docker engine"
        if not services.image_present(image):
            return f"{self.name}'s check needs the image {image}"
        return None

    @property
    def path(self) -> Path:
        return NOTEBOOKS / self.notebook


EXERCISES = [
    Exercise(
        "02_database_integration.ipynb",
        "retry-stale-update",
        bug=("for attempt in range(1, attempts + 1):", "for attempt in range(1, 2):"),
        why="a write that is not retried after a StaleDataError loses the update",
    ),
    Exercise(
        "03_api_integration.ipynb",
        "rename-owner-only",
        bug=('    assert stored == "Owner", f"a stranger\'s rename was stored: {stored!r}"\n', ""),
        why="without the database check, a rename stored before the 403 goes unseen",
        needs=("def replace_route",),
    ),
    Exercise(
        "04_message_queues.ipynb",
        "units-sold",
        bug=("    if claimed is None:\n        return False\n", ""),
        why="a redelivered order is counted twice",
        failing_test="test_a_duplicate_delivery_counts_once",
    ),
    Exercise(
        "05_microservices.ipynb",
        "slow-inventory",
        bug=(
            (
                '    assert elapsed < SLOW, f"took {elapsed:.1f} s: the shop waited for the slow '
                'inventory"\n'
            ),
            "",
        ),
        why="without the time bound, a shop that retries a slow inventory three times passes",
        needs=("SEED_ORDER = {", "def buyer_headers"),
    ),
    Exercise(
        "11_test_data.ipynb",
        "clean-up-by-ownership",
        bug=(
            (
                "            session.execute("
                "delete(OutboxEvent).where(OutboxEvent.aggregate_id.in_(about)))\n"
            ),
            "",
        ),
        why="outbox events the code under test wrote outlive the test that made them",
        needs=("class DataManager", "def unique_email", "def publish_post("),
        failing_test="test_removes_what_the_code_under_test_wrote",
    ),
    Exercise(
        "12_testcontainers.ipynb",
        "redis-container",
        bug=(
            "    with services.publish_on_loopback(container, container.port):\n",
            "    if services.publish_on_loopback(container, container.port).start():\n",
        ),
        why="a fixture that starts its container and never removes it leaks one per run",
        needs=("def docker_missing",),
        failing_test="test_the_container_is_gone_afterwards",
        docker_image_of="redis",
    ),
]


def starts(cell: nbformat.NotebookNode, *prefixes: str) -> bool:
    return cell.source.startswith(prefixes)


def cut_to_the_exercise(exercise: Exercise, tmp_path: Path, with_bug: bool = False) -> Path:
    nb = nbformat.read(exercise.path, as_version=4)
    cells = nb.cells
    check = next(i for i, c in enumerate(cells) if starts(c, f"%%check {exercise.name}"))
    if exercise.needs is None:
        kept = [
            c for c in cells[: check + 1]
            if c.cell_type == "code"
            and not starts(c, "%%ipytest")
            and "run_expecting_failure(" not in c.source
        ]
    else:
        first_section = next(i for i, c in enumerate(cells) if starts(c, "## "))
        section = next(i for i, c in enumerate(cells) if starts(c, "## Exercise"))
        needed = [
            c for c in cells[first_section:section]
            if c.cell_type == "code" and any(n in c.source for n in exercise.needs)
        ]
        assert len(needed) == len(exercise.needs), f"{exercise.notebook} changed: update needs"
        kept = cells[:first_section] + needed + cells[section : check + 1]
    if with_bug:
        solution = next(c for c in kept if starts(c, f"%%solution {exercise.name}"))
        right, wrong = exercise.bug
        assert solution.source.count(right) == 1, f"{exercise.name}'s solution changed: update bug"
        solution.source = solution.source.replace(right, wrong)
    nb.cells = kept
    path = tmp_path / exercise.notebook
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_a_wrong_answer_fails_the_check_and_nbmake(exercise, tmp_path, run_nbmake):
    if reason := exercise.cannot_run_here():
        pytest.skip(reason)
    try:
        result = run_nbmake(cut_to_the_exercise(exercise, tmp_path, with_bug=True), "run")
    finally:
        if exercise.docker_image_of:  # what the wrong answer leaked: its kernel has exited
            sweep_containers(services.docker_client())
    report = result.stdout[-3000:]
    assert result.returncode != 0, f"{exercise.why}, yet nbmake passed:\n{report}"
    assert f"'{exercise.name}' is not solved yet" in result.stdout, report
    # nbmake's log of the failing cell: its source, then the error (the report, in CI)
    failure = result.stdout[result.stdout.index(f"%%check {exercise.name}") :]
    failure = failure.split("\n===")[0]
    if exercise.failing_test:
        assert f"✗ {readable(exercise.failing_test)}" in failure, report
    check = next(c for c in nbformat.read(exercise.path, as_version=4).cells
                 if starts(c, f"%%check {exercise.name}"))
    hint = hint_of(check.source.split("\n", 1)[1])
    assert hint and " ".join(f"💡 Hint: {hint}".split()) in " ".join(failure.split()), report
    for noise in ("Traceback", "labkit/", "site-packages"):
        assert noise not in failure, f"{noise!r} in the report:\n{failure}"


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_the_untouched_stub_does_not_break_a_learners_run(exercise, tmp_path, run_nbmake):
    path = cut_to_the_exercise(exercise, tmp_path)
    result, nb = run_keeping_outputs(run_nbmake, path, "hide")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed, red = shown(nb.cells[-1])
    calm = f"⏳ '{exercise.name}' not attempted yet" if exercise.cannot_run_here() is None else "⏭️"
    assert calm in printed and not red, printed
