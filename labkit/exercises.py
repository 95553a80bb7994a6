"""Exercises in lessons: your cell, a hidden solution, a check that says if you solved it.

An exercise is three cells:

1. **yours** — a stub such as ``def count_orders(session): raise NotImplementedError``;
2. **the solution** — ``%%solution count-orders`` then the reference code, with the
   part you write between ``# BEGIN SOLUTION`` and ``# END SOLUTION``. Its source is
   collapsed, and it does *not* run unless LABKIT_SOLUTIONS=run (CI sets it, so CI
   checks every solution), or you ask with ``reveal("count-orders")``;
3. **the check** — ``%%check count-orders`` then tests, like ``%%ipytest``. It says
   ✅ solved, ⏳ not attempted yet (your stub still raises NotImplementedError), or
   fails loudly (❌) with the test output. Where every check skips (a lesson about
   containers on a machine without Docker), it prints ⏭️ and the reason instead.

``restore("count-orders")``, run in any cell, replaces that cell with the original
stub, derived from the solution.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass

import pytest

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB_LINE = 'raise NotImplementedError("your code here")'


class ExerciseError(RuntimeError):
    """An exercise is not solved, or was set up wrongly."""


@dataclass
class Exercise:
    name: str
    solution: str

    @property
    def stub(self) -> str:
        return make_stub(self.solution)


_EXERCISES: dict[str, Exercise] = {}


def solutions_run() -> bool:
    """True when solution cells execute (CI, `make test`): LABKIT_SOLUTIONS=run."""
    return os.environ.get("LABKIT_SOLUTIONS", "").lower() == "run"


def make_stub(solution: str) -> str:
    """The learner's version of a solution: each marked region becomes a NotImplementedError."""
    pattern = re.compile(
        rf"^(?P<indent>[ \t]*){re.escape(BEGIN)}[^\n]*\n.*?^[ \t]*{re.escape(END)}[^\n]*$",
        re.MULTILINE | re.DOTALL,
    )
    if not pattern.search(solution):
        raise ExerciseError(
            f"a solution needs a region marked with `{BEGIN}` … `{END}` to make its stub"
        )
    return pattern.sub(lambda m: f"{m['indent']}{STUB_LINE}", solution).strip() + "\n"


def solution_magic(line: str, cell: str) -> None:
    """``%%solution NAME``: record the solution; run it only when solutions run."""
    name = line.strip()
    if not name:
        raise ExerciseError("write the exercise's name after the magic: %%solution count-orders")
    _EXERCISES[name] = Exercise(name, cell)
    if solutions_run():
        _shell().run_cell(cell).raise_error()
    else:
        print(f"🔒 Solution to '{name}' is hidden. Try the exercise first; reveal('{name}') shows it.")


class _Outcome:
    """Collects what each test did, to tell 'not attempted' from 'wrong'."""

    def __init__(self) -> None:
        self.failed: list[pytest.TestReport | pytest.CollectReport] = []
        self.passed = 0
        self.skip_reasons: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.append(report)
        elif report.passed and report.when == "call":
            self.passed += 1
        elif report.skipped:
            # A skip's longrepr is (file, line, "Skipped: reason").
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skipped"
            self.skip_reasons.append(reason.removeprefix("Skipped: "))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.failed.append(report)

    @property
    def not_attempted(self) -> bool:
        return bool(self.failed) and all(
            "NotImplementedError" in str(r.longrepr) for r in self.failed
        )


def check_magic(line: str, cell: str) -> None:
    """``%%check NAME``: run the cell's tests against your code and say where you stand."""
    import ipytest

    name = line.strip() or "exercise"
    ipytest.clean()
    _shell().run_cell(cell).raise_error()
    outcome = _Outcome()
    # pytest's report is held back: an untouched stub should read as one calm line,
    # not a traceback per test. Anything else shows the report in full.
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        code = ipytest.run("-q", "--tb=short", plugins=[outcome], raise_on_error=False)
    if code == 0 and outcome.passed:
        print(f"✅ '{name}' solved: {outcome.passed} check(s) passed.")
        return
    if code == 0 and outcome.skip_reasons:
        reasons = "; ".join(dict.fromkeys(outcome.skip_reasons))
        print(f"⏭️ '{name}' not checked here: {reasons}.")
        return
    if outcome.not_attempted and not solutions_run():
        print(f"⏳ '{name}' not attempted yet: your function still raises NotImplementedError.")
        return
    print(report.getvalue())
    if not (outcome.passed or outcome.failed):
        raise ExerciseError(
            f"the check for '{name}' ran no test (pytest exit code {code}, report above)"
        )
    raise ExerciseError(
        f"❌ '{name}' is not solved yet: {len(outcome.failed)} check(s) failed (see above)."
    )


def reveal(name: str) -> None:
    """Put the solution in a new cell below, to read or to run."""
    _shell().set_next_input(_get(name).solution, replace=False)


def restore(name: str) -> None:
    """Replace the cell this is run from with the exercise's original stub."""
    _shell().set_next_input(_get(name).stub, replace=True)


def _get(name: str) -> Exercise:
    try:
        return _EXERCISES[name]
    except KeyError:
        known = ", ".join(sorted(_EXERCISES)) or "none yet"
        raise ExerciseError(
            f"no exercise '{name}' recorded in this kernel (known: {known}). "
            "Run its solution cell once — it stays hidden — then try again."
        ) from None


def _shell():
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise ExerciseError("exercises work inside Jupyter/IPython only")
    return shell


def register_magics() -> None:
    shell = _shell()
    shell.register_magic_function(solution_magic, magic_kind="cell", magic_name="solution")
    shell.register_magic_function(check_magic, magic_kind="cell", magic_name="check")
