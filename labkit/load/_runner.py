"""Closed- and open-loop runs: sender threads, their schedule, one row per request."""

from __future__ import annotations

import itertools
import math
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labkit.load._connection import Connection
from labkit.load._cpu import CpuMeter, warn_if_generator_bound
from labkit.load._errors import require_positive
from labkit.load._progress import wait_with_progress
from labkit.load._stats import run_frame

if TYPE_CHECKING:
    import pandas as pd

RequestPath = str | Callable[[int], str]


@dataclass
class _Plan:
    url: str
    path: Callable[[int], str]
    method: str
    headers: Mapping[str, str]
    timeout_s: float
    total: int | None
    duration_s: float | None
    interval_s: float | None  # open loop only: request i is due at i * interval_s
    stop: threading.Event = field(default_factory=threading.Event)
    began: float = 0.0  # perf_counter() at the run's start; times are relative to it

    def started(self) -> None:
        self.began = time.perf_counter()


def closed_loop(
    url: str,
    path: RequestPath = "/",
    *,
    workers: int,
    requests: int | None = None,
    duration_s: float | None = None,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
    app_pid: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """`workers` threads, each sending its next request as soon as the last one answered.

    Stops after `requests` requests or `duration_s` seconds, whichever comes first.
    `path` is a string or a function of the request's number (``lambda i:
    f"/api/users/{i % 100}/profile"``). Pass `app_pid` (``AppServer.pid``) to have the
    app's CPU reported next to the generator's.
    """
    if requests is None and duration_s is None:
        raise ValueError(
            "closed_loop needs requests=N or duration_s=S (or both) to know when to stop")
    require_positive(workers=workers)
    plan = _plan(url, path, method, headers, timeout_s, requests, duration_s, None)
    frame = _run(plan, workers, app_pid, progress)
    frame.attrs.update(mode="closed", workers=workers)
    return frame


def open_loop(
    url: str,
    path: RequestPath = "/",
    *,
    rate: float,
    duration_s: float,
    max_in_flight: int = 100,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
    app_pid: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """``rate`` requests per second for ``duration_s`` seconds, on schedule.

    Request *i* is due at *i / rate* seconds; its latency is counted from then, even if
    it left later because all `max_in_flight` senders were waiting on a stalled app.
    That is what makes a stall visible in every request it delayed.
    """
    require_positive(rate=rate, duration_s=duration_s, max_in_flight=max_in_flight)
    total = max(1, round(rate * duration_s))
    plan = _plan(url, path, method, headers, timeout_s, total, None, 1.0 / rate)
    frame = _run(plan, max_in_flight, app_pid, progress)
    frame.attrs.update(mode="open", rate=rate)
    return frame


def _plan(
    url: str, path: RequestPath, method: str, headers: Mapping[str, str] | None,
    timeout_s: float, total: int | None, duration_s: float | None, interval_s: float | None,
) -> _Plan:
    # Checked here, before any sender starts: a sender failing on it would leave the
    # others waiting for it at the starting line.
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected a base URL like http://127.0.0.1:8000, got {url!r}")
    path_for = path if callable(path) else (lambda _i, p=path: p)
    return _Plan(url, path_for, method, headers or {}, timeout_s, total, duration_s, interval_s)


def _run(plan: _Plan, threads: int, app_pid: int | None, progress: bool) -> pd.DataFrame:
    counter = itertools.count()
    records: list[list[tuple]] = [[] for _ in range(threads)]
    meter = CpuMeter(os.getpid(), app_pid, generator_children=False)
    # Senders are set up and connected before the clock starts, sharing one TLS
    # context: building one each costs ~20 ms of CPU, which would be charged to the
    # first requests, as would opening every connection at once.
    tls = ssl.create_default_context()

    def start_clock() -> None:
        meter.start()
        plan.started()

    clock = threading.Barrier(threads + 1, action=start_clock)
    workers = [
        threading.Thread(target=_worker, args=(plan, tls, clock, counter, out), daemon=True)
        for out in records
    ]
    for worker in workers:
        worker.start()
    clock.wait()
    try:
        _wait_with_progress(plan, workers, records, progress)
    finally:
        plan.stop.set()  # also on KeyboardInterrupt: senders finish their request and quit
        for worker in workers:
            worker.join()
    wall = time.perf_counter() - plan.began
    cpu = meter.stop()
    frame = run_frame(itertools.chain.from_iterable(records))
    frame.attrs.update(url=plan.url, wall_s=wall, cpu=cpu)
    warn_if_generator_bound(cpu)
    return frame


def _worker(
    plan: _Plan, tls: ssl.SSLContext, clock: threading.Barrier, counter: Iterator[int],
    out: list[tuple],
) -> None:
    connection = Connection(plan.url, plan.headers, plan.timeout_s, tls)
    connection.open()
    clock.wait()
    began = plan.began
    try:
        while not plan.stop.is_set():
            i = next(counter)
            if plan.total is not None and i >= plan.total:
                return
            if plan.interval_s is not None:
                due = i * plan.interval_s
                wait = due - (time.perf_counter() - began)
                if wait > 0:
                    time.sleep(wait)
            sent = time.perf_counter() - began
            if plan.interval_s is None:
                if plan.duration_s is not None and sent >= plan.duration_s:
                    return
                due = sent
            status, error = connection.send(plan.method, plan.path(i))
            done = time.perf_counter() - began
            out.append((due, (done - due) * 1000, (sent - due) * 1000, status, error))
    finally:
        connection.close()


def _wait_with_progress(
    plan: _Plan, workers: list[threading.Thread], records: list[list[tuple]], progress: bool
) -> None:
    """Counted in requests when the run has a number of them, else in seconds."""
    if plan.total is not None:
        wait_with_progress(workers, plan.total, "req", lambda: sum(map(len, records)), progress)
        return
    assert plan.duration_s is not None  # a run without a number of requests has a duration
    seconds = math.ceil(plan.duration_s)
    wait_with_progress(
        workers, seconds, "s", lambda: min(int(time.perf_counter() - plan.began), seconds),
        progress,
    )
