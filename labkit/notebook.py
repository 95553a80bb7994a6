"""What every lesson calls first: ``import labkit.notebook; labkit.notebook.setup()``."""

from __future__ import annotations

import time
from collections.abc import Iterable

from labkit import exercises, services


def setup(start: Iterable[str] = ()) -> None:
    """Make %%ipytest cells fail loudly, add the exercise magics, and say where services run.

    ``raise_on_error=True`` matters: by default ipytest only prints a failing test's
    report and the cell still succeeds, so a broken lesson would pass CI unseen.
    `start` names services to start now (with their time-to-ready) rather than on
    first use.
    """
    import ipytest

    ipytest.autoconfig(
        raise_on_error=True,
        addopts=[
            "-q",
            "--no-header",
            "-p", "no:cacheprovider",
            # pytest cannot rewrite asserts in plugins the kernel imported before it
            # (anyio, via httpx); harmless, and noise in every cell.
            "-W", "ignore::pytest.PytestAssertRewriteWarning",
        ],
    )
    exercises.register_magics()
    print(report())
    for name in start:
        began = time.perf_counter()
        endpoint = services.get(name)
        print(f"  {name} ready in {time.perf_counter() - began:.1f}s: {endpoint.safe_url}")


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
