"""What every lesson calls first: ``import labkit.notebook; labkit.notebook.setup()``."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from labkit import exercises, services


def setup(start: Iterable[str] = ()) -> None:
    """Make %%ipytest cells fail loudly, add the exercise magics, and say where services run.

    ``raise_on_error=True`` matters: by default ipytest only prints a failing test's
    report and the cell still succeeds, so a broken lesson would pass CI unseen.

    `start` names the services the lesson needs. They start now, in the background, each
    on its own, so the lesson goes on at once: a cell that uses only PostgreSQL waits for
    PostgreSQL, never for RabbitMQ's longer boot. A service that cannot start says why
    in the first cell that uses it.
    """
    import ipytest

    _run_cells_outside_the_lessons()
    ipytest.autoconfig(
        raise_on_error=True,
        addopts=[
            "-q",
            "--no-header",
            # skip reasons ("needs Docker: …") under the results, as pytest -ra shows them
            "-ra",
            # the lesson's folder, not the module's: the summary then names the failed test
            # (FAILED ::test_x), not the module's path from there (../../tmp/…/cell.py)
            "--rootdir=.",
            "-p", "no:cacheprovider",
            # the demo shop's fixtures (shop_client, …): cheap to load, heavy only when used
            "-p", "labkit.shop.testing.fixtures",
            # Plugins installed beside the lessons that no lesson cell uses, each seconds
            # to import on a cell's first run: nbmake (CI runs it outside the kernel),
            # Hypothesis, Faker (factory_boy brings it), Locust (lesson 10 runs it in
            # subprocesses; its plugin must never load in a kernel), Schemathesis (the
            # shop's API contract test runs it from tests/: ~2.7 s of a kernel's first
            # cell), xdist (a cell's tests run in the kernel, never in workers).
            "-p", "no:nbmake",
            "-p", "no:hypothesispytest",
            "-p", "no:faker",
            "-p", "no:locust",
            "-p", "no:schemathesis",
            "-p", "no:xdist",
            "-p", "no:xdist.looponfail",
            # pytest cannot rewrite asserts in plugins the kernel imported before it
            # (anyio, via httpx); harmless, and noise in every cell.
            "-W", "ignore::pytest.PytestAssertRewriteWarning",
        ],
    )
    exercises.register_magics()
    print(report())
    names = list(start)
    for name in names:
        services.check(name)  # a misconfiguration is reported here, not in a later cell
        threading.Thread(target=_start_quietly, args=(name,), daemon=True).start()
    if names:
        print(f"labkit: starting {', '.join(names)} in the background.")


# The module file ipytest runs a cell's tests as; pytest names it in reports (cell.py::test_x).
CELL_MODULE = "cell.py"


def _run_cells_outside_the_lessons() -> None:
    """Keep ipytest's per-cell module file out of the lesson folder and out of reports.

    ipytest (0.14) runs a cell's tests by writing an empty module ``t_<hex>.py`` to the
    current directory, which is the lesson's folder: JupyterLab lists it beside the
    lessons, a killed kernel leaves it there, and every report names it
    (``FAILED t_3f9c….py::test_x``). ipytest has no option for where it goes; it keeps the
    name it chose in ``random_module_path._filename`` and reuses it, so that is where we
    give it ours: ``cell.py`` in a directory of this kernel's own, removed when it exits.
    The empty pytest.ini beside it is the one pytest finds (it searches up from the
    module), so no pytest settings of a project around it reach into the cells; setup()
    passes the kit's, with the lesson's folder as rootdir so that reports name the test.
    One ipytest feature no longer fits: ``{MODULE}::test_x`` on a ``%%ipytest`` line names
    the file relative to the current directory; select tests with ``-k test_x`` instead.
    """
    from ipytest import _impl

    current = getattr(_impl.random_module_path, "_filename", None)
    if current is not None and Path(current).name == CELL_MODULE:
        return  # setup() ran before in this kernel
    directory = Path(tempfile.mkdtemp(prefix="labkit-cells-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    (directory / "pytest.ini").write_text(
        "[pytest]\n# labkit: the rootdir of a notebook's test cells; setup() passes their options\n"
    )
    _impl.random_module_path._filename = str(directory / CELL_MODULE)


def _start_quietly(name: str) -> None:
    # The error, if any, is raised again, with its fix, by the cell that needs the service.
    with contextlib.suppress(Exception):
        services.get(name)


def report() -> str:
    """One line: which backend serves each service, and why."""
    parts = []
    for name in services.specs():
        try:
            backend, reason = services.check(name)
            parts.append(f"{name} → {backend} ({reason})")
        except services.ServiceError as exc:
            parts.append(f"{name} → unavailable: {exc}")
    return "labkit: " + " · ".join(parts)


class _FailureReasons:
    """A pytest plugin that keeps each failed test's one-line reason."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = crash.message.splitlines()[0] if crash else str(report.longrepr)
            self.reasons.append(f"{report.head_line}: {reason}")


def run_expecting_failure(*pytest_args: str, because: str, plugins: Iterable[object] = ()) -> list[str]:
    """Run the notebook's tests against a deliberate bug and prove they catch it.

    `pytest_args` select tests as on the command line (``"-k", "test_x"``); `plugins`
    can swap the bug in (for instance a fixture that monkeypatches the app). Prints and
    returns each failed test's reason; raises AssertionError if every test passed,
    because then the tests cannot catch `because`.
    """
    import ipytest
    import pytest

    failures = _FailureReasons()
    code = ipytest.run(
        "-q", "--tb=no", *pytest_args, plugins=[*plugins, failures], raise_on_error=False
    )
    if code != pytest.ExitCode.TESTS_FAILED:
        raise AssertionError(f"the tests should have caught {because} (pytest exit code {code})")
    print(f"caught {because}:", *failures.reasons, sep="\n  ")
    return failures.reasons
