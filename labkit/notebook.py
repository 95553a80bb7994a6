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
