"""Every exercise's check, proven on its own lesson, in the kernel a learner would have.

One kernel per lesson runs every cell in order, as a learner does (solutions hidden), so
this is also CI's learner run of every lesson. At each exercise's ``%%check``:

1. **the untouched stub**: the check says "not attempted" (or, where its tests cannot run
   here, why it skipped) and shows nothing red;
2. **each wrong answer** listed for the exercise in ``tests/wrong_answers/<lesson>.toml``:
   the solution with that bug put back makes the check fail, with a report a learner can
   act on: the failed check in words, the exercise's hint, one red line, no kit internals;
3. **the solution**, run by its ``%%solution`` cell as CI runs it (LABKIT_SOLUTIONS=run):
   the check says solved;
4. **the stub again**: the learner's cell is run once more, so the rest of the lesson runs
   as for a learner who skipped the exercise; no later cell may need its solution.

Any other cell that raises fails the lesson, as it would fail nbmake; a cell that writes to
stderr (a warning a learner would see in red) fails it too, unless the cell says, in a
comment, that it fails deliberately (``# deliberately fails: …``), or the warning is one
about how a measurement was taken (a busy machine). A test that skips fails it too, unless
its cell says why it may (a Docker-only test): the kernel's services are external ones
(below), so this is CI's proof that every fault demo runs, not skips, on that backend.

A wrong answer is a ``[[exercise-name]]`` table::

    [[visit-counter]]
    why = "a counter that never expires keeps a key per page for ever"  # what it would miss
    replace = "    client.expire(key, 3600)\\n"   # text of the solution (exactly once)
    with = ""                                     # what the bug puts in its place
    failing_test = "test_counter_expires_within_an_hour"  # optional: must be reported

The kernel uses this process's PostgreSQL, Redis and RabbitMQ as external services, as a
learner's kernel does beside `labkit up`: one set of servers for the whole run.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell

from labkit import services
from labkit.exercises import hint_of, readable
from labkit.services import Endpoint, sweep_containers

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WRONG_ANSWERS = Path(__file__).parent / "wrong_answers"
NOISE = ("Traceback", "labkit/", "site-packages", "File \"")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class WrongAnswer:
    exercise: str
    why: str
    replace: str
    by: str
    failing_test: str | None = None

    def applied_to(self, solution: str) -> str:
        count = solution.count(self.replace)
        assert count == 1, (
            f"{self.exercise}: the wrong answer's `replace` text occurs {count} times in the "
            f"solution, not once; update tests/wrong_answers: {self.replace!r}"
        )
        return solution.replace(self.replace, self.by)


def wrong_answers(lesson: Path) -> dict[str, list[WrongAnswer]]:
    path = WRONG_ANSWERS / f"{lesson.stem}.toml"
    if not path.exists():
        return {}
    table = tomllib.loads(path.read_text())
    return {
        name: [
            WrongAnswer(name, w["why"], w["replace"], w["with"], w.get("failing_test"))
            for w in answers
        ]
        for name, answers in table.items()
    }


def magic(cell: nbformat.NotebookNode) -> tuple[str, str]:
    """``("check", "visit-counter")`` for a ``%%check visit-counter`` cell, else ``("", "")``."""
    first = cell.source.split("\n", 1)[0] if cell.cell_type == "code" else ""
    match = re.match(r"%%(solution|check)\s+(\S+)", first)
    return (match[1], match[2]) if match else ("", "")


def body(cell_source: str) -> str:
    """A ``%%solution`` cell's code, without its magic line: run as the learner's cell."""
    return cell_source.split("\n", 1)[1]


def shown(cell: nbformat.NotebookNode) -> tuple[str, str, list[str]]:
    """What a cell showed: printed text, stderr text, and its error's lines (red)."""
    out = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    err = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
    red = [ANSI.sub("", line) for o in cell.outputs if o.output_type == "error"
           for line in o.traceback]
    return out, err, red


# Warnings that report how a measurement was taken (a busy machine), not a fault of the
# lesson: a learner on a loaded laptop should see them, so they may appear.
MEASUREMENT_WARNINGS = ("GeneratorBottleneckWarning",)
DELIBERATE = re.compile(r"#.*\bdeliberate", re.IGNORECASE)  # a cell that says it fails on purpose
# ipytest's summary line when tests skipped ("3 passed, 1 skipped in 0.52s"). A lesson's
# demos run on every backend (faults go through labkit's proxy, not a paused server), so
# a skip is allowed only in a cell that says why it may skip (Docker-only tests, or a
# measurement that needs a server of its own).
SKIPPED = re.compile(r"\b\d+ skipped\b")
MAY_SKIP = ("NO_DOCKER", "skip_without_docker", "pytest.skip(")


def red_text(stderr: str) -> str:
    """What a cell wrote to stderr, without the warnings about measurement conditions."""
    kept, skipping = [], False
    for line in stderr.splitlines():
        if any(f": {warning}: " in line for warning in MEASUREMENT_WARNINGS):
            skipping = True  # the warning's line, then the source line Python shows under it
            continue
        if skipping and line.startswith(" "):
            continue
        skipping = False
        kept.append(line)
    return "\n".join(kept).strip()


SOLUTIONS_RUN = "import os\nos.environ['LABKIT_SOLUTIONS'] = '{mode}'"


class Lesson:
    """A lesson's kernel, driven cell by cell."""

    def __init__(self, client: NotebookClient) -> None:
        self.client = client

    def run(self, source: str, index: int, expect_error: bool = False) -> nbformat.NotebookNode:
        cell = new_code_cell(source)
        if expect_error:
            cell.metadata["tags"] = ["raises-exception"]
        self.client.execute_cell(cell, index)
        return cell


def external_urls(*endpoints: Endpoint) -> dict[str, str]:
    urls = {}
    for endpoint in endpoints:
        spec = services.specs()[endpoint.service]
        urls[spec.backend_env] = "external"
        urls[spec.url_env] = endpoint.url
    return urls


def test_every_exercise_has_wrong_answers_for_its_lesson():
    """A wrong-answer file names only exercises its lesson has, and each exercise has one."""
    missing, unknown = [], []
    for lesson in NOTEBOOKS:
        cells = nbformat.read(lesson, as_version=4).cells
        names = {name for kind, name in map(magic, cells) if kind == "check"}
        answers = wrong_answers(lesson)
        missing += [f"{lesson.stem}: {n}" for n in sorted(names - set(answers))]
        unknown += [f"{lesson.stem}: {n}" for n in sorted(set(answers) - names)]
        for name, listed in answers.items():
            assert listed, f"{lesson.stem}: [[{name}]] lists no wrong answer"
    assert not unknown, f"wrong answers for exercises the lessons do not have: {unknown}"
    assert not missing, (
        "exercises whose check no test proves (add a wrong answer to tests/wrong_answers/): "
        f"{missing}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("lesson", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_learners_run_proves_each_check(
    lesson: Path, tmp_path: Path, postgres: Endpoint, redis: Endpoint, rabbitmq: Endpoint
) -> None:
    copy = tmp_path / lesson.name  # figures and files a lesson writes go beside the copy
    shutil.copy(lesson, copy)
    nb = nbformat.read(copy, as_version=4)
    answers = wrong_answers(lesson)
    env = {**os.environ, **external_urls(postgres, redis, rabbitmq), "LABKIT_SOLUTIONS": "hide"}
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    solutions: dict[str, str] = {}
    stubs: dict[str, str] = {}
    learners_cell = ""
    proven: list[str] = []
    with client.setup_kernel(env=env):
        kernel = Lesson(client)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            kind, name = magic(cell)
            where = f"{lesson.name}, cell {index}"
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as error:
                pytest.fail(f"{where} raised in a learner's run:\n{ANSI.sub('', str(error))[-3000:]}")
            printed, stderr, red = shown(cell)
            if red_text(stderr) and not DELIBERATE.search(cell.source):
                pytest.fail(f"{where} wrote to stderr (red in JupyterLab):\n{stderr[-2000:]}")
            if SKIPPED.search(printed) and not any(may in cell.source for may in MAY_SKIP):
                pytest.fail(f"{where}: a test skipped on the external backend, where every "
                            f"demo must run:\n{printed[-2000:]}")
            if "exercise" in cell.metadata.get("tags", []):
                learners_cell = cell.source
            if kind == "solution":
                solutions[name], stubs[name] = cell.source, learners_cell
            elif kind == "check":
                if "⏭️" in printed:  # its tests cannot run here (no Docker): nothing to prove
                    continue
                assert f"⏳ '{name}' not attempted yet" in printed and not red, (
                    f"{where}: the untouched stub must read as not attempted, calmly:\n"
                    f"{printed}{red}"
                )
                hint = hint_of(body(cell.source))
                for wrong in answers.get(name, []):
                    kernel.run(body(wrong.applied_to(solutions[name])), index)
                    result = kernel.run(cell.source, index, expect_error=True)
                    assert_reported(result, name, wrong, hint, where)
                kernel.run(SOLUTIONS_RUN.format(mode="run"), index)
                kernel.run(solutions[name], index)
                kernel.run(SOLUTIONS_RUN.format(mode="hide"), index)
                printed, _, red = shown(kernel.run(cell.source, index))
                assert f"✅ '{name}' solved" in printed and not red, (
                    f"{where}: the solution must pass its own check:\n{printed}{red}"
                )
                kernel.run(stubs[name], index)
                proven.append(name)
    if services.engine_answers():  # what a wrong answer leaked: its kernel has exited
        sweep_containers(services.docker_client())
    print(f"{lesson.stem}: checks proven: {', '.join(proven) or 'none'}")


def assert_reported(
    cell: nbformat.NotebookNode, name: str, wrong: WrongAnswer, hint: str, where: str
) -> None:
    printed, _, red = shown(cell)
    seen = f"{printed}\n" + "\n".join(red)
    assert red, f"{where}: {wrong.why}, yet '{name}''s check passed:\n{printed}"
    assert printed.startswith(f"❌ '{name}' is not solved yet"), f"{where}:\n{seen}"
    assert len(red) == 1 and red[0].startswith("ExerciseNotSolved"), (
        f"{where}: a wrong answer shows one red line, not a traceback:\n{seen}"
    )
    if wrong.failing_test:
        assert f"✗ {readable(wrong.failing_test)}" in printed, f"{where}:\n{seen}"
    assert hint, f"{where}: '{name}''s check has no `# hint:` under its magic"
    assert " ".join(f"💡 Hint: {hint}".split()) in " ".join(printed.split()), f"{where}:\n{seen}"
    for noise in NOISE:
        assert noise not in seen, f"{where}: {noise!r} in what the learner sees:\n{seen}"
