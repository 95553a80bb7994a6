"""The shop's database goes down for real: the measurements lesson 03b shows.

    >>> from labkit.shop.testing.outages import clients_in_a_freeze, frozen
    >>> settings = settings_from_services(fault_layer=True)   # the shop goes through the proxy
    >>> clients_in_a_freeze(shop.engine, settings.database_url)
    >>> timeline = health_through_an_outage(client, outage_at=1.0, outage_for=6.0, run_for=9.0)

`frozen` freezes PostgreSQL (or RabbitMQ, or Redis) for the shop with `labkit.faults`:
the shop reaches each server through this process's proxy to it (`through_fault_layer`,
which `settings_from_services(fault_layer=True)` and the `shop_settings` fixture use)
and the proxy stops moving bytes. One path on every backend (Docker, local, `labkit up`, a URL):
the server itself is never touched, so a lesson runs the same wherever it runs, and a
server shared with others (a tenant's, a workshop's) is never stopped under them.
`labkit.services.paused` (``docker pause``, SIGSTOP) stays in the kit for a server this
process runs, but no lesson depends on it.
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

    from labkit.faults import Fault
    from labkit.services import Endpoint

__all__ = [
    "FreezeResult",
    "Timed",
    "clients_in_a_freeze",
    "frozen",
    "health_through_an_outage",
    "plot_outage",
    "require_fault_layer",
    "through_fault_layer",
    "timed",
]


def through_fault_layer(endpoint: Endpoint) -> Endpoint:
    """`endpoint` through this process's `labkit.faults` proxy: what `frozen` reaches.

    The same credentials and database, the proxy's host and port. Clients given the
    server's own endpoint see no fault at all.
    """
    from labkit import faults

    return faults.proxied(endpoint)


def frozen(service: str = "postgres") -> Fault:
    """`service` frozen for clients of its proxy: connects succeed, nothing answers.

    A `labkit.faults.Fault`: use it as ``with frozen("postgres"):``, or switch it on in
    one place and ``.off()`` in another (a callback that freezes the database at the
    worst moment). Only clients connected through `through_fault_layer` see it; the
    server keeps answering everyone else.
    """
    from labkit import faults

    return faults.freeze(service)


def require_fault_layer(database_url: str) -> None:
    """Raise ValueError unless `database_url` goes through the proxy `frozen` freezes.

    A URL that bypasses the proxy would see no freeze at all: a demo or a test would
    measure a healthy database and call it an outage. Better an error that says so.
    """
    from labkit import faults

    proxy = faults.proxy("postgres")
    url = make_url(database_url)
    if (url.host, url.port) != (proxy.host, proxy.port):
        raise ValueError(
            f"labkit freezes PostgreSQL at its fault layer's proxy, {proxy.host}:{proxy.port}, "
            f"but this database_url goes to {url.host}:{url.port} and would never see the "
            "freeze: build the settings with settings_from_services(fault_layer=True) or use "
            "the shop_settings fixture"
        )


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
    plain_waited_through: bool  # still waiting when the freeze ended


def clients_in_a_freeze(engine: Engine, database_url: str) -> FreezeResult:
    """Freeze PostgreSQL (`frozen`) while a plain psycopg connection (libpq's defaults: no
    timeouts) and the shop's engine each run ``SELECT 1``; the freeze ends once the engine
    has given up, plus a second in which the plain connection is seen still waiting."""
    def select_one_via_engine() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    require_fault_layer(database_url)
    url = make_url(database_url).set(drivername="postgresql")
    results: dict[str, Timed] = {}
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as plain:
        select_one_via_engine()  # a warm pool, as in a running app
        started = time.monotonic()
        with frozen("postgres"):
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
) -> list[dict[str, float | int | str]]:
    """``GET /health`` every `every` seconds for `run_for` seconds, with PostgreSQL frozen
    from `outage_at` for `outage_for` seconds: one row per request (``sent_s``,
    ``took_s``, ``status``, ``phase``). The client's app must reach PostgreSQL as `frozen`
    expects (`through_fault_layer`).

    ``phase`` places each request against the instants the freeze really began and
    ended, which a loaded machine may shift from the schedule: ``before`` (answered
    before it began), ``during`` (sent after it began, answered before it ended),
    ``after`` (sent after it ended), or ``across`` (straddling a boundary)."""
    began = time.monotonic()
    frozen_from_to: list[float] = []

    def outage() -> None:
        time.sleep(outage_at)  # a fault on a schedule: there is nothing to wait for
        with frozen("postgres"):
            frozen_from_to.append(time.monotonic() - began)
            time.sleep(outage_for)
        frozen_from_to.append(time.monotonic() - began)

    injector = threading.Thread(target=outage)
    rows: list[dict[str, float | int | str]] = []
    injector.start()
    try:
        while (sent := time.monotonic() - began) < run_for:
            status = client.get("/health").status_code
            rows.append({"sent_s": sent, "took_s": time.monotonic() - began - sent,
                         "status": status})
            time.sleep(every)
    finally:
        injector.join()
    start, end = frozen_from_to
    for row in rows:
        sent_s, answered_s = float(row["sent_s"]), float(row["sent_s"]) + float(row["took_s"])
        row["phase"] = (
            "before" if answered_s < start
            else "after" if sent_s > end
            else "during" if sent_s >= start and answered_s <= end
            else "across"
        )
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
