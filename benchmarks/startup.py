"""How fast a lesson starts, what labkit's plugin costs another project, and the core install.

    python benchmarks/startup.py                 # first cell, later cell, plugin overhead
    python benchmarks/startup.py --core-install  # also: a fresh venv with `pip install .`

Figures, printed; targets from issue #8 are printed beside them, never asserted:

- a fresh kernel, services not yet started: `setup(start=["postgres", "redis"])`, as a
  lesson that needs them calls it, plus a first ``%%ipytest`` cell with
  one ``db_session`` and one ``redis_client`` test (target ≤ 3 s), then a later cell with
  two trivial tests (target ≤ 0.5 s). Run through nbclient, as nbmake and JupyterLab run
  a kernel; each cell's time is the kernel's own (execute_input → execute_reply).
- a foreign project's ``pytest`` start with labkit's plugins and without them, the median
  of several runs (target ≤ 0.2 s more).
- ``pip install .`` without extras in a new venv: packages and size (target ≤ 40).

Services run on the backend chosen as usual (set LABKIT_BACKEND=local to measure a cold
start of private servers); state goes to a private directory, so nothing of another
run is reused or stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETUP = 'import labkit.notebook\nlabkit.notebook.setup(start=["postgres", "redis"])'
FIRST_CELL = """%%ipytest
from sqlalchemy import text


def test_database(db_session):
    assert db_session.execute(text("select 1")).scalar() == 1


def test_cache(redis_client):
    redis_client.set("greeting", "hello")
    assert redis_client.get("greeting") == "hello"
"""
LATER_CELL = """%%ipytest
def test_one():
    assert 1 + 1 == 2


def test_two():
    assert "lab" in "labkit"
"""


def cell_seconds(cell: dict) -> float:
    timing = cell["metadata"]["execution"]
    began = datetime.fromisoformat(timing["iopub.execute_input"])
    ended = datetime.fromisoformat(timing["shell.execute_reply"])
    return (ended - began).total_seconds()


def lesson_start(env: dict[str, str]) -> dict[str, float]:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(src) for src in (SETUP, FIRST_CELL, LATER_CELL)]
    began = time.perf_counter()
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", record_timing=True)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        client.execute(cwd=str(ROOT / "notebooks"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    setup, first, later = (cell_seconds(cell) for cell in notebook.cells)
    return {
        "kernel start + all cells": time.perf_counter() - began,
        "setup()": setup,
        "first %%ipytest cell": first,
        "later %%ipytest cell": later,
    }


def pytest_start(extra_args: list[str], project: Path, env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra_args],
            cwd=project, env=env, check=True, capture_output=True,
        )
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def plugin_overhead(env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median pytest start of a one-test project with labkit's plugins and without them.

    Entry-point autoloading is off in both runs, and labkit's two plugins are named
    explicitly in one: the other plugins this venv holds (nbmake, Hypothesis, Faker, …)
    cost seconds and would drown the difference.
    """
    quiet = {**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with tempfile.TemporaryDirectory(prefix="labkit-foreign-") as folder:
        project = Path(folder)
        (project / "pyproject.toml").write_text("[project]\nname = 'foreign'\nversion = '0'\n")
        (project / "test_app.py").write_text("def test_app():\n    assert True\n")
        without = pytest_start([], project, quiet, runs)
        with_labkit = pytest_start(
            ["-p", "labkit.plugin", "-p", "labkit.plugin_aws"], project, quiet, runs
        )
    return with_labkit, without


def core_install() -> tuple[int, float]:
    with tempfile.TemporaryDirectory(prefix="labkit-core-") as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        print("  installing labkit without extras in a new venv…", flush=True)
        subprocess.run([*pip, "install", "-q", str(ROOT)], check=True, capture_output=True)
        listed = subprocess.run(
            [*pip, "list", "--format=freeze"], check=True, capture_output=True, text=True
        ).stdout.split()
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    return len(listed), size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="pytest starts per variant")
    parser.add_argument("--core-install", action="store_true", help="also measure `pip install .`")
    args = parser.parse_args()

    state = tempfile.mkdtemp(prefix="labkit-bench-state-")
    env = {**os.environ, "LABKIT_STATE_DIR": state}
    print(f"labkit start-up, {os.cpu_count()} cores, backend {env.get('LABKIT_BACKEND', 'auto')}")

    figures = lesson_start(env)
    first = figures["setup()"] + figures["first %%ipytest cell"]
    for name, seconds in figures.items():
        print(f"  {name:<28} {seconds:6.2f} s")
    print(f"  setup() + first cell         {first:6.2f} s   (target ≤ 3 s)")
    print(f"  later cell                   {figures['later %%ipytest cell']:6.2f} s   "
          "(target ≤ 0.5 s)")

    with_labkit, without = plugin_overhead(env, args.runs)
    print(f"  foreign project's pytest     {without:6.2f} s without labkit's plugins, "
          f"{with_labkit:.2f} s with them: +{with_labkit - without:.2f} s (target ≤ 0.2 s)")

    if args.core_install:
        count, megabytes = core_install()
        print(f"  core install                 {count} packages, {megabytes:.0f} MB "
              "(target ≤ 40 packages)")


if __name__ == "__main__":
    main()
