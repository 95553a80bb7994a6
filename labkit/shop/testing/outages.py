"""The shop's database goes down for real: the measurements lesson 03b shows.

    >>> from labkit.shop.testing.outages import pause_support, clients_in_a_freeze
    >>> support = pause_support()              # can labkit freeze PostgreSQL here?
    >>> clients_in_a_freeze(shop.engine, settings.database_url)
    >>> timeline = health_through_an_outage(client, outage_at=1.0, outage_for=6.0, run_for=9.0)

Freezing is `labkit.services.paused`: ``docker pause`` on Docker, SIGSTOP on the local
backend. A server labkit does not run (the external backend) cannot be frozen, and
`pause_support` says so in words a lesson can print or skip with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FreezeResult",
    "PauseSupport",
    "Timed",
    "clients_in_a_freeze",
    "health_through_an_outage",
    "pause_support",
    "plot_outage",
    "timed",
]


@dataclass(frozen=True)
class PauseSupport:
    """Whether labkit can freeze a service here, and what to say when it cannot."""

    service: str
    backend: str
    can_pause: bool
    reason: str


def pause_support(service: str = "postgres") -> PauseSupport:
    """Can `labkit.services.paused(service)` freeze the server this process uses?"""
    from labkit import services

    backend, _ = services.backend_for(service)
    can = backend not in ("external", "tenant")
    how = "external" if backend == "external" else "a tenant of a shared server"
    reason = "" if can else (
        f"skipped: {service} is {how} here, and labkit cannot pause a server it does not "
        "run alone. Run this lesson with LABKIT_BACKEND=docker or local to see the outage."
    )
    return PauseSupport(service, backend, can, reason)


@dataclass(frozen=True)
class Timed:
    """How long a call took, and what came of it: ``answered`` or the error's first line."""

    seconds: float
    outcome: str


def timed(run: Callable[[], object]) -> Timed:
    """Run `run()` and time it; an exception is an outcome, not an error."""
    started = time.monotonic()
    try:
        run()
        outcome = "answered"
    except Exception as exc:  # noqa: BLE001 - what the call raised is what we report
        outcome = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return Timed(time.monotonic() - started, outcome)


@dataclass(frozen=True)
class FreezeResult:
    """`SELECT 1` from a plain connection and from the shop's engine, in one freeze."""

    plain: Timed
    engine: Timed
    frozen_for: float
    plain_waited_through: bool  # still waiting when the server resumed


def clients_in_a_freeze(engine: Engine, database_url: str) -> FreezeResult:
    """Freeze PostgreSQL while a plain psycopg connection (libpq's defaults: no timeouts)
    and the shop's engine each run ``SELECT 1``; the freeze ends once the engine has given
    up, plus a second in which the plain connection is seen still waiting."""
    from labkit import services

    def select_one_via_engine() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    url = make_url(database_url).set(drivername="postgresql")
    results: dict[str, Timed] = {}
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as plain:
        select_one_via_engine()  # a warm pool, as in a running app
        started = time.monotonic()
        with services.paused("postgres"):
            waiter = threading.Thread(
                target=lambda: results.update(plain=timed(lambda: plain.execute("SELECT 1")))
            )
            waiter.start()
            results["engine"] = timed(select_one_via_engine)
            waiter.join(timeout=1.0)
            still_waiting = waiter.is_alive()
            frozen_for = time.monotonic() - started
        waiter.join(timeout=30)
    return FreezeResult(results["plain"], results["engine"], frozen_for, still_waiting)


def health_through_an_outage(
    client: Any, outage_at: float, outage_for: float, run_for: float, every: float = 0.05
) -> list[dict[str, float | int]]:
    """``GET /health`` every `every` seconds for `run_for` seconds, with PostgreSQL frozen
    from `outage_at` for `outage_for` seconds: one row per request (``sent_s``,
    ``took_s``, ``status``)."""
    from labkit import services

    db = services.handle("postgres")

    def outage() -> None:
        time.sleep(outage_at)  # a fault on a schedule: there is nothing to wait for
        db.pause()
        try:
            time.sleep(outage_for)
        finally:
            db.resume()

    injector = threading.Thread(target=outage)
    rows: list[dict[str, float | int]] = []
    began = time.monotonic()
    injector.start()
    try:
        while (sent := time.monotonic() - began) < run_for:
            status = client.get("/health").status_code
            rows.append({"sent_s": sent, "took_s": time.monotonic() - began - sent,
                         "status": status})
            time.sleep(every)
    finally:
        injector.join()
    return rows


def plot_outage(timeline: Any, outage_at: float, outage_for: float) -> Figure:
    """Each request as a dot: when it was sent, how long it took, coloured by status."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.axvspan(outage_at, outage_at + outage_for, color="0.9", label="PostgreSQL frozen")
    for status, color in [(200, "tab:green"), (503, "tab:red")]:
        shown = timeline[timeline["status"] == status]
        ax.scatter(shown["sent_s"], shown["took_s"], s=14, color=color, label=f"{status}")
    ax.set(xlabel="request sent at (s)", ylabel="took (s)",
           title="GET /health through a real outage")
    ax.legend(loc="upper right")
    return fig
