"""Lessons run as a learner runs them: in JupyterLab, in a real browser, with Run All.

nbmake and tests/test_exercise_checks.py run the lessons' kernels; this runs the whole
thing a learner sees: `make lab`'s JupyterLab with the kit's settings, headless Chromium,
JupyterLab's "Run All". It checks that every cell ran, that nothing is red (an error or
stderr) unless the cell says it fails deliberately, and that JupyterLab asked nothing
(no news pop-up); it leaves a screenshot in out/browser/.

Lesson 00 runs by default (about a minute); LABKIT_BROWSER_LESSONS=all runs every lesson
(`ci/browser-check` does, and installs what it needs), or name some: `=03a,04b`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from jupyterlab_browser import ROOT, BrowserRun, jupyterlab, missing, run_all_in_browser
from test_exercise_checks import DELIBERATE, MEASUREMENT_WARNINGS, external_urls

from labkit.services import Endpoint

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def chosen() -> list[Path]:
    wanted = os.environ.get("LABKIT_BROWSER_LESSONS", "00")
    if wanted == "all":
        return NOTEBOOKS
    numbers = {w.strip() for w in wanted.split(",")}
    return [p for p in NOTEBOOKS if p.stem.split("_")[0] in numbers or p.stem in numbers]


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
@pytest.mark.parametrize("lesson", chosen(), ids=lambda p: p.stem)
def test_a_learners_run_all_in_jupyterlab_shows_nothing_red(
    lesson: Path, tmp_path: Path, postgres: Endpoint, redis: Endpoint, rabbitmq: Endpoint
) -> None:
    run = run_in_jupyterlab(lesson, tmp_path, external_urls(postgres, redis, rabbitmq))
    print(f"{lesson.stem}: {run.executed}/{run.code_cells} cells ran in JupyterLab "
          f"in {run.seconds:.0f} s; screenshot {run.screenshot}")
    assert run.executed == run.code_cells, (
        f"{lesson.name}: Run All stopped after {run.executed} of {run.code_cells} code cells"
    )
    red = unexplained_red(lesson, run)
    assert not red, f"{lesson.name}: red in JupyterLab:\n" + "\n".join(red)
    assert not run.news_prompt, "JupyterLab asked about news: the kit's settings were not used"


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_the_browser_run_sees_red_where_a_learner_would(tmp_path: Path) -> None:
    """The check can fail: an error and a stderr line are seen; a deliberate one is let be."""
    cells = [
        "import sys\nprint('a warning a learner would see', file=sys.stderr)",
        "# deliberately fails: the lesson says why\nraise ValueError('shown on purpose')",
        "print('fine')",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    lesson = tmp_path / "99_red.ipynb"
    nbformat.write(nb, lesson)
    run = run_in_jupyterlab(lesson, tmp_path / "run", {})
    assert [r.cell for r in run.red] == [0, 1], run.red
    assert unexplained_red(lesson, run) == [
        "cell 0 (import sys): a warning a learner would see\n"
    ]
    assert run.executed == 2, "Run All stops after the error, as JupyterLab does"


def run_in_jupyterlab(lesson: Path, folder: Path, urls: dict[str, str]) -> BrowserRun:
    served = folder / "lessons"  # JupyterLab's log stays out of the file browser
    served.mkdir(parents=True)
    shutil.copy(lesson, served / lesson.name)
    env = {**os.environ, **urls, "LABKIT_SOLUTIONS": "hide"}
    with jupyterlab(served, env, log=folder / "jupyterlab.log") as server:
        return run_all_in_browser(server, lesson.name, ROOT / "out" / "browser" / f"{lesson.stem}.png")


def unexplained_red(lesson: Path, run: BrowserRun) -> list[str]:
    """Red outputs but warnings about measurement conditions and cells that say they fail
    deliberately."""
    cells = nbformat.read(lesson, as_version=4).cells
    return [
        f"cell {r.cell} ({r.source}): {r.text[:300]}" for r in run.red
        if not any(w in r.text for w in MEASUREMENT_WARNINGS)
        and not DELIBERATE.search(cells[r.cell].source)
    ]
