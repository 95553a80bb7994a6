"""Exercises in lessons: your cell, a hidden solution, a check that says if you solved it.

An exercise is three cells:

1. **yours** — a stub such as ``def count_orders(session): raise NotImplementedError``;
2. **the solution** — ``%%solution count-orders`` then the reference code, with the
   part you write between ``# BEGIN SOLUTION`` and ``# END SOLUTION``. Its source is
   collapsed, and it does *not* run unless LABKIT_SOLUTIONS=run (CI sets it, so CI
   checks every solution), or you ask with ``reveal("count-orders")``;
3. **the check** — ``%%check count-orders`` then tests, like ``%%ipytest``. It says
   ✅ solved, ⏳ not attempted yet (your stub still raises NotImplementedError), or ❌
   not solved. Where every check skips (a lesson about containers on a machine without
   Docker), it prints ⏭️ and the reason instead.

A wrong answer gets a short report, not pytest's: each failed test by its name in words
(``test_counts_each_visit`` → "counts each visit"), the one assertion that failed with its
values, and the exercise's hint; then the cell fails with one red line, so nbmake fails a
wrong solution in CI. The hint is written in the check cell, as a comment right under the
magic (continued on the comment lines after it), where the lesson's author sees it beside
the tests it explains; the report shows it after a wrong answer::

    %%check count-orders
    # hint: count in SQL with func.count(); loading every order to count them in
    #   Python is what the last test catches.
    def test_counts_only_this_users_orders(db_session): ...

Under LABKIT_SOLUTIONS=run the report goes into the error itself, since nbmake's log
shows a failing cell's error and not its printed output.

``restore("count-orders")``, run in any cell, replaces that cell with the original
stub, derived from the solution.

Three more kinds of exercise use the same three cells:

- **fix the code**: the stub is the buggy code, written after ``# STUB`` inside the
  marked region, one ``# `` in front of each line; it starts with a
  ``raise NotImplementedError("…fix the bug below, then delete this line")`` so that an
  untouched stub reads as "not attempted" and not as a wrong answer::

      # BEGIN SOLUTION
      if claimed is None:
          return False
      # STUB
      # raise NotImplementedError("a redelivery counts twice: fix it, then delete this line")
      # END SOLUTION

- **write the test that catches the bug**: the learner writes a test function; the check
  runs it against the right code (it must pass) and the broken versions (it must fail).
- **predict, then run**: the learner records a prediction in the cell *before* the demo
  runs (``prediction = ...`` in the stub, made by a ``# STUB`` of ``# prediction = ...``);
  the check compares it with what the demo measured, through ``answer(prediction)``,
  which says "not attempted" while the prediction is still ``...``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkit.classroom import reporting

BEGIN, END, STUB = "# BEGIN SOLUTION", "# END SOLUTION", "# STUB"
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
    return pattern.sub(_stub_of_region, solution).strip() + "\n"


def _stub_of_region(match: re.Match[str]) -> str:
    """A marked region's stub: the lines after its ``# STUB`` uncommented, or the default."""
    indent = match["indent"]
    lines = match[0].splitlines()[1:-1]
    marks = [i for i, text in enumerate(lines) if text.strip() == STUB]
    if not marks:
        return f"{indent}{STUB_LINE}"
    stub = []
    for text in lines[marks[0] + 1 :]:
        code = text.strip()
        if not code.startswith("#"):
            raise ExerciseError(
                f"after `{STUB}` every line is the stub's code commented out with '# ': {text!r}"
            )
        stub.append(text[: text.index("#")] + code[1:].removeprefix(" ") if code != "#" else "")
    return "\n".join(stub)


def answer(value: object, what: str = "your prediction") -> object:
    """`value`, once the learner has given one: ``...`` (the stub's) means not yet.

    A predict-then-run check compares ``answer(prediction)`` with what the demo measured;
    while the prediction is still ``...`` the check says "not attempted", not "wrong".
    """
    if value is Ellipsis:
        raise NotImplementedError(f"{what} is still `...`: replace it with your answer")
    return value


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

    @property
    def what_is_left(self) -> str:
        """The stub's own words (``your prediction is still `...` ``), or the usual line."""
        for report in self.failed:
            text = _ANSI.sub("", str(report.longrepr))
            match = re.search(r"NotImplementedError: (.+)", text)
            if match and match[1].strip() not in ('your code here', "'your code here'"):
                return match[1].strip().rstrip(".")
        return "your function still raises NotImplementedError"

    @property
    def tests(self) -> int:
        """Tests that ran: a test failing in its call and in its teardown counts once."""
        return self.passed + len({r.nodeid for r in self.failed})


class ExerciseNotSolved(ExerciseError):
    """A check found a wrong answer. The report above says what; IPython shows one line.

    IPython prints what ``_render_traceback_`` returns in place of the traceback, which
    would run through ipytest, pytest and this module: nothing a learner can act on. The
    cell still fails, so nbmake fails a wrong solution in CI.
    """

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report  # shown with the error only where nothing else shows it (CI)

    def _render_traceback_(self) -> list[str]:
        return [*self.report.splitlines(), f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


# Lines of pytest's advice that a notebook cell cannot follow (it has no -v to add).
_PYTEST_ADVICE = re.compile(r"^\s*(Use -v+ to get|\.\.\.Full output truncated)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ADDRESS = re.compile(r"\s*(object )?at 0x[0-9a-fA-F]+")
_MODULE_PATH = re.compile(r"\b(?:[a-z_]\w*\.)+(?=[A-Za-z_])")  # not Class.method
_LONGEST_REPR = 40  # characters; a longer <…> repr shows its type only
_MOST_LINES = 8  # of one failure's message


def check_magic(line: str, cell: str) -> None:
    """``%%check NAME``: run the cell's tests against your code and say where you stand."""
    import ipytest

    name = line.strip() or "exercise"
    started = time.monotonic()
    ipytest.clean()
    if not _shell().run_cell(cell).success:
        raise ExerciseNotSolved(f"'{name}' could not be checked: its cell raised the error above")
    outcome = _Outcome()
    # pytest's own report is held back: an untouched stub reads as one calm line, a wrong
    # answer as a short report of our own. pytest's is shown only if no test ran at all.
    pytest_report = io.StringIO()
    with contextlib.redirect_stdout(pytest_report):
        # --color=no: pytest colours the values in its messages, which the report quotes
        code = ipytest.run(
            "-q", "--tb=short", "--color=no", plugins=[outcome], raise_on_error=False
        )
    if code == 0 and outcome.passed:
        print(f"✅ '{name}' solved: {outcome.passed} check(s) passed.")
        _tell_the_board(name, "solved", started)
        return
    if code == 0 and outcome.skip_reasons:
        reasons = "; ".join(dict.fromkeys(outcome.skip_reasons))
        print(f"⏭️ '{name}' not checked here: {reasons}.")
        return
    if outcome.not_attempted and not solutions_run():
        print(f"⏳ '{name}' not attempted yet: {outcome.what_is_left}.")
        _tell_the_board(name, "not attempted", started)
        return
    if not (outcome.passed or outcome.failed):
        print(pytest_report.getvalue())
        raise ExerciseError(
            f"the check for '{name}' ran no test (pytest exit code {code}, report above)"
        )
    failed = len({r.nodeid for r in outcome.failed})
    summary = f"'{name}' is not solved yet: {failed} of {outcome.tests} check(s) failed."
    report = failure_report(f"❌ {summary}", outcome.failed, hint_of(cell))
    _tell_the_board(name, "wrong", started)
    if solutions_run():  # CI: nbmake's log shows a cell's error, not what it printed
        raise ExerciseNotSolved(summary, report)
    print(report)
    raise ExerciseNotSolved(f"{summary} What failed is above.")


def _tell_the_board(exercise: str, outcome: str, started: float) -> None:
    """Report a check's outcome to the trainer's board, where the learner is in a room
    (LABKIT_CLASSROOM_URL and _TOKEN set): one calm line if the board did not take it,
    never an error, since the learner's work is unaffected."""
    problem = reporting.report(current_lesson(), exercise, outcome,
                               seconds=round(time.monotonic() - started, 3))
    if problem:
        print(f"ℹ️ {problem}.")


def current_lesson() -> str:
    """The running notebook's name (02a_orders.ipynb → 02a_orders), as Jupyter gives it
    to the kernel (JPY_SESSION_NAME); "unknown" where a kernel runs outside Jupyter."""
    session = os.environ.get("JPY_SESSION_NAME") or _shell().user_ns.get("__session__") or ""
    return Path(str(session)).stem or "unknown"


def hint_of(cell: str) -> str:
    """The hint in a check cell's leading comments, as one line of text.

    It starts at ``# hint:`` and runs on over the comment lines right after it, until a
    blank line or code: ``# hint: claim the order first;`` then ``#   return False if…``.
    """
    hint: list[str] | None = None
    for text in cell.splitlines():
        text = text.strip()
        if not text.startswith("#"):
            if text or hint is not None:
                break  # code, or the blank line after the hint
        elif hint is not None:
            hint.append(text.lstrip("#").strip())
        elif match := re.match(r"#\s*hint:\s*(.*)", text, re.IGNORECASE):
            hint = [match[1].strip()]
    return " ".join(hint or [])


def failure_report(
    title: str, failed: list[pytest.TestReport | pytest.CollectReport], hint: str
) -> str:
    """What a learner can act on: each failed test in words, what failed with its values,
    what their code printed, and the exercise's hint; no traceback, no long object reprs."""
    lines = [title, ""]
    for report in failed:
        test = getattr(report, "head_line", None) or report.nodeid
        when = {"setup": " (while setting it up)", "teardown": " (while cleaning up)"}
        lines.append(f"  ✗ {readable(test)}{when.get(getattr(report, 'when', ''), '')}")
        lines += [f"      {text}" for text in what_failed(report)]
        printed = getattr(report, "capstdout", "").strip().splitlines()
        if printed:
            lines.append("      your code printed:")
            lines += [f"        {text}" for text in _at_most(printed)]
        lines.append("")
    if hint:
        lines.append(textwrap.fill(
            f"💡 Hint: {hint}", width=100, subsequent_indent="   ",
            break_long_words=False, break_on_hyphens=False,
        ))
    return "\n".join(lines).rstrip()


def readable(test: str) -> str:
    """``test_counts_each_visit[home]`` → ``counts each visit [home]``."""
    function, bracket, params = test.partition("[")
    words = function.removeprefix("test_").replace("_", " ")
    return f"{words} {bracket}{params}" if bracket else words


def what_failed(report: pytest.TestReport | pytest.CollectReport) -> list[str]:
    """pytest's message for the failure (the assertion with its values, or the error),
    without its advice to add -v and with long object reprs cut to their type."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash else str(report.longrepr).strip().splitlines()[-1]
    message = re.sub(r"<class '(?:\w+\.)*(\w+)'>", r"\1", message.removeprefix("AssertionError: "))
    kept = [
        _shorten_reprs(text.rstrip())
        for text in message.splitlines()
        if text.strip() and not _PYTEST_ADVICE.match(text)
    ]
    return _at_most(kept)


def _at_most(lines: list[str]) -> list[str]:
    if len(lines) <= _MOST_LINES:
        return lines
    return [*lines[: _MOST_LINES - 1], f"… ({len(lines) - _MOST_LINES + 1} more lines)"]


def _shorten_reprs(text: str) -> str:
    """``<redis.client.Redis(<redis.connection.ConnectionPool(…)>)>`` → ``<Redis …>``."""
    parts, done = [], 0
    start = text.find("<")
    while start != -1:
        end = _closing_bracket(text, start)
        if end is not None:
            span = text[start : end + 1]
            parts += [text[done:start], span if len(span) <= _LONGEST_REPR else _type_of(span)]
            done = end + 1
        start = text.find("<", max(done, start + 1))
    return "".join([*parts, text[done:]])


def _closing_bracket(text: str, start: int) -> int | None:
    """Where the repr opened at `start` closes; None if `<` is a comparison (``a < b``).

    pytest cuts a long repr in its middle (``<redis…(<R...=5)>)>)>``), which can cut its
    brackets: past the cut, the repr ends where its run of closing brackets ends.
    """
    depth, since_cut = 0, None  # brackets opened since the cut, once there is one
    for at in range(start, len(text)):
        if text[at] == "<" and text[at + 1 : at + 2].isalpha():
            depth += 1
            since_cut = None if since_cut is None else since_cut + 1
        elif text[at] == ">" and depth:
            depth -= 1
            if since_cut:
                since_cut -= 1
            elif depth == 0 or (since_cut == 0 and text[at + 1 : at + 2] not in (")", ">")):
                return at
        elif text.startswith("...", at) and since_cut is None:
            since_cut = 0
        if depth == 0:
            return None
    return None


def _type_of(span: str) -> str:
    head = re.match(r"[^<>()\[\]{},=]*", span[1:])
    words = _ADDRESS.sub("", _MODULE_PATH.sub("", head[0] if head else "")).strip()
    return f"<{words or 'object'} …>"


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
