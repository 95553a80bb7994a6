"""A lesson must run top to bottom twice in the same kernel: learners re-run cells.

Lessons 00 and 01 run here on every CI run; the others cost several minutes together,
so they run with LABKIT_RERUN_ALL=1 (do it after changing a lesson).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
ALWAYS = ("00_welcome.ipynb", "01_service_fixtures.ipynb")
LESSONS = sorted(
    p for p in NOTEBOOKS.glob("*.ipynb")
    if p.name in ALWAYS or os.environ.get("LABKIT_RERUN_ALL")
)


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_twice_in_one_kernel(path, monkeypatch):
    monkeypatch.setenv("LABKIT_SOLUTIONS", "run")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    with client.setup_kernel():
        for run in ("first", "second"):
            for index, cell in enumerate(nb.cells):
                try:
                    client.execute_cell(cell, index)
                except Exception as exc:  # noqa: BLE001 (re-raised with the run and cell named)
                    raise AssertionError(f"{run} run, cell {index}: {exc}") from None
