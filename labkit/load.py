"""Load runs against a live HTTP app → one pandas row per request → summaries and SLOs.

The whole use::

    from labkit import load

    with load.serve_app("labkit.load_demo:app") as app:         # uvicorn, own process
        closed = load.closed_loop(app.url, "/ping", workers=50, requests=1000)
        opened = load.open_loop(app.url, "/ping", rate=200, duration_s=5)
    load.compare(closed=closed, open=opened)                    # p50 … p99.9, max
    load.assert_slo(opened, success_rate=0.99, p99_ms=100)      # readable failure

**Closed loop** (``closed_loop``): N workers, each sends its next request when the last
one answered — like the ``ThreadPoolExecutor`` test most teams write. When the app
stalls, the workers stall with it and stop sending, so the stall is measured by at most
N requests: *coordinated omission*.

**Open loop** (``open_loop``): requests are due on a fixed schedule (``rate`` per
second), whether or not earlier ones answered — like users who don't wait for each
other. Latency is counted from when a request was *due*, so time spent waiting
behind a stall is counted too.

A run's DataFrame has one row per request: ``start_s`` (when it was due, in seconds
from the run's start), ``latency_ms``, ``queue_ms`` (due → actually sent; 0 in a closed
loop), ``status`` (0 when no response came), ``error`` and ``ok``.

The load generator shares the machine with the app. Each run measures both
processes' CPU and warns (``GeneratorBottleneckWarning``) when the generator, not the
app, is the likely limit. For more load than one Python process can make, run Locust
headless in subprocesses (``run_locust``); see its docstring for distributed mode.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import itertools
import json
import math
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
from tqdm import tqdm

COLUMNS = ["start_s", "latency_ms", "queue_ms", "status", "error", "ok"]
PERCENTILES = {"p50_ms": 0.50, "p90_ms": 0.90, "p99_ms": 0.99, "p99.9_ms": 0.999}
LOCUSTFILE = Path(__file__).parent / "locustfiles" / "http_get.py"
PROGRESS_AFTER_S = 3.0

Path_ = str | Callable[[int], str]


class LoadError(RuntimeError):
    """A load run could not start or finish."""


class GeneratorBottleneckWarning(UserWarning):
    """The load generator, not the app, probably limited this run."""


class SLOViolation(AssertionError):
    """A run missed one or more service-level objectives."""


# --------------------------------------------------------------------------- the app


@dataclass
class AppServer:
    """An ASGI app served by uvicorn in a child process."""

    app: str
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self.log_path.unlink(missing_ok=True)


def start_app(
    app: str = "labkit.load_demo:app",
    *,
    env: Mapping[str, str] | None = None,
    factory: bool = False,
    workers: int = 1,
    ready_path: str = "/",
    timeout_s: float = 30.0,
) -> AppServer:
    """Serve `app` ("module:attribute") with uvicorn in its own process on 127.0.0.1.

    The app runs outside the notebook kernel and the test process, as in production:
    the load generator cannot borrow its event loop, and a stall in the app cannot
    freeze the generator. Returns once `ready_path` answers (any status below 500).
    With `factory`, the attribute is a function that builds the app (uvicorn
    --factory), typically from settings passed in `env`. Call ``stop()`` when done —
    or use ``serve_app``; it is stopped at interpreter exit in any case.
    """
    port = _free_port()
    log = Path(tempfile.mkstemp(prefix="labkit-uvicorn-", suffix=".log")[1])
    command = [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning", "--no-access-log",
        *(["--factory"] if factory else []),
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
    server = AppServer(app, f"http://127.0.0.1:{port}", process, log)
    atexit.register(server.stop)
    _wait_until_serving(server, ready_path, timeout_s)
    return server


@contextlib.contextmanager
def serve_app(app: str = "labkit.load_demo:app", **options: Any) -> Iterator[AppServer]:
    """``start_app`` as a context manager: the server stops when the block ends."""
    server = start_app(app, **options)
    try:
        yield server
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(server: AppServer, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_problem = "no answer yet"
    with httpx.Client(base_url=server.url, timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                log = server.log_tail()
                server.stop()
                raise LoadError(
                    f"uvicorn serving {server.app!r} exited with code "
                    f"{server.process.returncode} before answering. Its log:\n"
                    f"{log}\nCheck that the import string is 'module:attribute' "
                    "and that the module imports without error."
                )
            try:
                if client.get(path).status_code < 500:
                    return
                last_problem = "it answered with a server error"
            except httpx.HTTPError as exc:
                last_problem = f"{type(exc).__name__}"
            time.sleep(0.05)
    log = server.log_tail()
    server.stop()
    raise LoadError(
        f"{server.app!r} did not answer GET {path} at {server.url} within {timeout_s:.0f}s "
        f"({last_problem}). Its log:\n{log}\n"
        "Raise timeout_s if the app is slow to start, or pass a ready_path it serves."
    )


# --------------------------------------------------------------------------- CPU


@dataclass(frozen=True)
class CpuReport:
    """CPU used during a run, in cores (1.0 = one core busy for the whole run)."""

    generator_cores: float
    app_cores: float | None
    machine_busy: float
    machine_cores: int

    def bottleneck(self) -> str | None:
        """Why the generator, not the app, probably limited the run — or None."""
        # One Python process's threads share a GIL, so about one core is its ceiling.
        if self.generator_cores >= 0.85:
            return (
                f"the load generator used {self.generator_cores:.2f} CPU cores, about all one "
                "Python process can use"
            )
        if (self.app_cores is not None and self.machine_busy >= 0.90
                and self.generator_cores > self.app_cores):
            return (
                f"the machine was {self.machine_busy:.0%} busy and the generator used more CPU "
                f"({self.generator_cores:.2f} cores) than the app ({self.app_cores:.2f})"
            )
        return None

    def __str__(self) -> str:
        app = "?" if self.app_cores is None else f"{self.app_cores:.2f}"
        return (
            f"generator {self.generator_cores:.2f} cores · app {app} cores · machine "
            f"{self.machine_busy:.0%} busy of {self.machine_cores} cores"
        )


class _CpuMeter:
    """CPU seconds of the generator and the app between start() and stop(), sampled so
    that children that exit early (Locust's forked workers) still count."""

    def __init__(self, generator_pid: int, app_pid: int | None, generator_children: bool) -> None:
        # The kernel's children include the app itself: counted as the generator only
        # when the generator is a subprocess (Locust).
        self._trees = {"generator": generator_pid, "app": app_pid}
        self._children = {"generator": generator_children, "app": True}
        self._seen: dict[str, dict[int, float]] = {name: {} for name in self._trees}
        self._baseline: dict[str, dict[int, float]] = {}

    def start(self) -> None:
        self._sample()
        self._baseline = {name: dict(seen) for name, seen in self._seen.items()}
        self._machine = psutil.cpu_times()
        self._began = time.perf_counter()

    def sample(self) -> None:
        self._sample()

    def stop(self) -> CpuReport:
        self._sample()
        wall = max(time.perf_counter() - self._began, 1e-9)
        machine = psutil.cpu_times()
        total = sum(machine) - sum(self._machine)
        idle = (machine.idle + getattr(machine, "iowait", 0.0)) - (
            self._machine.idle + getattr(self._machine, "iowait", 0.0)
        )
        used = {
            name: sum(cpu - self._baseline[name].get(pid, 0.0) for pid, cpu in seen.items())
            for name, seen in self._seen.items()
        }
        return CpuReport(
            generator_cores=used["generator"] / wall,
            app_cores=None if self._trees["app"] is None else used["app"] / wall,
            machine_busy=1 - idle / total if total > 0 else 0.0,
            machine_cores=psutil.cpu_count() or 1,
        )

    def _sample(self) -> None:
        for name, pid in self._trees.items():
            if pid is None:
                continue
            for proc in _processes(pid, self._children[name]):
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    self._seen[name][proc.pid] = times.user + times.system


def _processes(pid: int, children: bool) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)] if children else [root]
    except psutil.Error:
        return []


def _warn_if_generator_bound(cpu: CpuReport) -> None:
    reason = cpu.bottleneck()
    if reason:
        warnings.warn(
            f"{reason}: the generator, not the app, is probably the bottleneck, so these "
            "figures understate what the app can do. Use fewer workers or a lower rate, "
            "run_locust(processes=…), or generate load from another machine.",
            GeneratorBottleneckWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- runs


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
    path: Path_ = "/",
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
        raise ValueError("closed_loop needs requests=N or duration_s=S (or both) to know when to stop")
    _require_positive(workers=workers)
    plan = _plan(url, path, method, headers, timeout_s, requests, duration_s, None)
    frame = _run(plan, workers, app_pid, progress)
    frame.attrs.update(mode="closed", workers=workers)
    return frame


def open_loop(
    url: str,
    path: Path_ = "/",
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
    _require_positive(rate=rate, duration_s=duration_s, max_in_flight=max_in_flight)
    total = max(1, round(rate * duration_s))
    plan = _plan(url, path, method, headers, timeout_s, total, None, 1.0 / rate)
    frame = _run(plan, max_in_flight, app_pid, progress)
    frame.attrs.update(mode="open", rate=rate)
    return frame


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def _plan(
    url: str, path: Path_, method: str, headers: Mapping[str, str] | None, timeout_s: float,
    total: int | None, duration_s: float | None, interval_s: float | None,
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
    meter = _CpuMeter(os.getpid(), app_pid, generator_children=False)
    # Senders are set up before the clock starts, sharing one TLS context: building one
    # each costs ~20 ms of CPU, which would be charged to the first requests.
    tls = ssl.create_default_context()
    clock = threading.Barrier(threads + 1, action=lambda: (meter.start(), plan.started()))
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
    frame = _frame(itertools.chain.from_iterable(records))
    frame.attrs.update(url=plan.url, wall_s=wall, cpu=cpu)
    _warn_if_generator_bound(cpu)
    return frame


def _worker(
    plan: _Plan, tls: ssl.SSLContext, clock: threading.Barrier, counter: Iterator[int],
    out: list[tuple],
) -> None:
    connection = _Connection(plan.url, plan.headers, plan.timeout_s, tls)
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


class _Connection:
    """One keep-alive HTTP connection per sender.

    The standard library's http.client, not httpx: it costs about a quarter of the CPU
    per request, and the generator's CPU is taken from the app it shares a machine with.
    """

    def __init__(
        self, url: str, headers: Mapping[str, str], timeout_s: float, tls: ssl.SSLContext
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self.prefix = parts.path.rstrip("/")
        self.headers = dict(headers)
        if parts.scheme == "https":
            self.http = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout_s, context=tls)
        else:
            self.http = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        self.used = False

    def send(self, method: str, path: str) -> tuple[int, str | None]:
        try:
            status = self._exchange(method, path)
        except (OSError, http.client.HTTPException) as exc:
            self.http.close()
            return 0, f"{type(exc).__name__}: {exc}"[:200]
        return status, None if status < 400 else f"HTTP {status}"

    def _exchange(self, method: str, path: str) -> int:
        try:
            return self._once(method, path)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not self.used:
                raise
            # The server closed an idle keep-alive connection; any client retries that once.
            self.http.close()
            return self._once(method, path)

    def _once(self, method: str, path: str) -> int:
        self.http.request(method, self.prefix + path, headers=self.headers)
        response = self.http.getresponse()
        response.read()
        self.used = True
        return response.status

    def close(self) -> None:
        self.http.close()


def _wait_with_progress(
    plan: _Plan, workers: list[threading.Thread], records: list[list[tuple]], progress: bool
) -> None:
    # The bar appears only after PROGRESS_AFTER_S, so short runs stay quiet.
    if plan.total is not None:
        total, unit = plan.total, "req"
    else:
        total, unit = math.ceil(plan.duration_s), "s"
    with tqdm(total=total, unit=unit, delay=PROGRESS_AFTER_S, disable=not progress,
              leave=False, file=sys.stdout) as bar:
        while any(w.is_alive() for w in workers):
            time.sleep(0.2)
            done = (sum(map(len, records)) if unit == "req"
                    else min(int(time.perf_counter() - plan.began), total))
            bar.update(done - bar.n)


def _frame(rows: Iterator[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    frame["status"] = frame["status"].astype(int)
    frame["error"] = frame["error"].astype(object)
    frame["ok"] = frame["error"].isna()
    return frame.sort_values("start_s", ignore_index=True)


# --------------------------------------------------------------------------- summaries


def summary(run: pd.DataFrame) -> pd.Series:
    """Requests, success rate, throughput and latency percentiles of one run.

    Percentiles are exact (each is a latency some request really had) and cover every
    request, failed ones included: a fast error is not a good response time.
    Throughput counts successful responses per second of the run.
    """
    latency = run["latency_ms"].to_numpy()
    if latency.size == 0:
        raise ValueError("this run has no requests to summarize: was the duration too short?")
    seconds = _span_s(run)
    values = {
        "requests": int(latency.size),
        "success_rate": float(run["ok"].mean()),
        "throughput_rps": float(run["ok"].sum() / seconds) if seconds > 0 else float("nan"),
        "mean_ms": float(latency.mean()),
        **{
            name: float(np.quantile(latency, q, method="inverted_cdf"))
            for name, q in PERCENTILES.items()
        },
        "max_ms": float(latency.max()),
    }
    return pd.Series(values, name=run.attrs.get("label"))


def _span_s(run: pd.DataFrame) -> float:
    """From the first request's start to the last response."""
    return float((run["start_s"] + run["latency_ms"] / 1000).max() - run["start_s"].min())


def compare(**runs: pd.DataFrame) -> pd.DataFrame:
    """One summary row per named run: ``compare(closed=a, open=b)``."""
    return pd.DataFrame({name: summary(run) for name, run in runs.items()}).T


def timeline(run: pd.DataFrame, bucket_s: float = 1.0) -> pd.DataFrame:
    """Per time bucket: throughput and errors (by when responses came back), and latency
    percentiles (by when requests were due — a stall is charged to the requests it hit)."""
    done_at = ((run["start_s"] + run["latency_ms"] / 1000) // bucket_s) * bucket_s
    due_at = (run["start_s"] // bucket_s) * bucket_s
    counts = run.groupby(done_at)["ok"].agg(ok="sum", all="count")
    latency = run.groupby(due_at)["latency_ms"]
    # Every bucket gets a row, so a stall shows as zero throughput rather than a gap.
    buckets = np.arange(0.0, float(done_at.max()) + bucket_s / 2, bucket_s)
    frame = pd.DataFrame({
        "rps": counts["ok"] / bucket_s,
        "error_rps": (counts["all"] - counts["ok"]) / bucket_s,
        "p50_ms": latency.quantile(0.5),
        "p99_ms": latency.quantile(0.99),
        "max_ms": latency.max(),
    }).reindex(buckets, method="nearest", tolerance=bucket_s / 1000)
    frame = frame.fillna({"rps": 0.0, "error_rps": 0.0})
    frame.index.name = "t_s"
    return frame


# --------------------------------------------------------------------------- capacity


def sweep(
    url: str,
    path: Path_ = "/",
    *,
    workers: Sequence[int] | None = None,
    rates: Sequence[float] | None = None,
    duration_s: float = 2.0,
    headers: Mapping[str, str] | None = None,
    app_pid: int | None = None,
    before_each: Callable[[], object] | None = None,
) -> pd.DataFrame:
    """Run one load per level — closed loop over `workers`, or open loop over `rates` —
    and summarize each: the data for a throughput/latency-vs-load curve.

    `before_each` runs before every level, e.g. to empty a cache so each level
    starts cold."""
    if (workers is None) == (rates is None):
        raise ValueError("sweep needs exactly one of workers=[…] (closed loop) or rates=[…] (open loop)")
    levels = list(workers if workers is not None else rates)
    rows = []
    with warnings.catch_warnings():
        # One warning for the whole sweep, below, rather than one per level.
        warnings.simplefilter("ignore", GeneratorBottleneckWarning)
        for level in tqdm(levels, desc="sweep", unit="level", leave=False, file=sys.stdout,
                          delay=PROGRESS_AFTER_S):
            if before_each is not None:
                before_each()
            if workers is not None:
                run = closed_loop(url, path, workers=int(level), duration_s=duration_s,
                                  headers=headers, app_pid=app_pid, progress=False)
            else:
                run = open_loop(url, path, rate=level, duration_s=duration_s, headers=headers,
                                app_pid=app_pid, progress=False)
            cpu: CpuReport = run.attrs["cpu"]
            rows.append({**summary(run), "generator_cores": cpu.generator_cores,
                         "app_cores": cpu.app_cores, "generator_bound": cpu.bottleneck() is not None})
    frame = pd.DataFrame(rows, index=pd.Index(levels, name="workers" if workers else "offered_rps"))
    bound = frame.index[frame["generator_bound"]].tolist()
    if bound:
        warnings.warn(
            f"the generator was the likely bottleneck at {frame.index.name} = {bound}: "
            "read those points as lower bounds on the app's capacity.",
            GeneratorBottleneckWarning, stacklevel=2,
        )
    return frame


def find_knee(sweep_result: pd.DataFrame, fraction: float = 0.9) -> float:
    """The least load that already gets `fraction` of the sweep's best throughput.

    Past the knee, more load buys little more throughput but a longer queue, so the
    tail latency climbs: it is the most load worth offering, and a fair "capacity".
    """
    throughput = sweep_result["throughput_rps"]
    return throughput.index[throughput >= fraction * throughput.max()][0]


# --------------------------------------------------------------------------- SLOs


_OBJECTIVES = {
    # name: (label, unit, True if the measured value must be at least the target)
    "success_rate": ("success rate", "%", True),
    "min_throughput_rps": ("throughput", "req/s", True),
    "p50_ms": ("p50 latency", "ms", False),
    "p90_ms": ("p90 latency", "ms", False),
    "p99_ms": ("p99 latency", "ms", False),
    "p999_ms": ("p99.9 latency", "ms", False),
    "max_ms": ("max latency", "ms", False),
}


def slo_report(
    run: pd.DataFrame,
    *,
    success_rate: float | None = None,
    min_throughput_rps: float | None = None,
    p50_ms: float | None = None,
    p90_ms: float | None = None,
    p99_ms: float | None = None,
    p999_ms: float | None = None,
    max_ms: float | None = None,
) -> tuple[bool, str]:
    """Check a run against objectives; return (all met, a table a person can read)."""
    targets = {
        "success_rate": success_rate, "min_throughput_rps": min_throughput_rps,
        "p50_ms": p50_ms, "p90_ms": p90_ms, "p99_ms": p99_ms, "p999_ms": p999_ms,
        "max_ms": max_ms,
    }
    targets = {name: value for name, value in targets.items() if value is not None}
    if not targets:
        raise ValueError("name at least one objective, e.g. p99_ms=100 or success_rate=0.99")
    stats = summary(run)
    lines, met_all = [], True
    for name, target in targets.items():
        label, unit, at_least = _OBJECTIVES[name]
        measured = stats["throughput_rps" if name == "min_throughput_rps" else
                         "p99.9_ms" if name == "p999_ms" else name]
        met = measured >= target if at_least else measured <= target
        met_all &= met
        rule = "≥" if at_least else "≤"
        line = (f"  {'✓' if met else '✗'} {label:<14} {_fmt(measured, unit):>12}   "
                f"must be {rule} {_fmt(target, unit)}")
        if not met:
            line += f"   ({_why(run, name, target)})"
        lines.append(line)
    head = (f"{'SLO met' if met_all else 'SLO NOT MET'} by {int(stats['requests'])} requests over "
            f"{_span_s(run):.1f}s ({_describe(run)}):")
    return met_all, "\n".join([head, *lines])


def assert_slo(run: pd.DataFrame, **objectives: float) -> pd.Series:
    """Raise ``SLOViolation`` listing every missed objective; return the summary if all
    were met. Objectives as in ``slo_report``: ``assert_slo(run, p99_ms=100, success_rate=0.99)``."""
    met, report = slo_report(run, **objectives)
    if not met:
        raise SLOViolation(report)
    return summary(run)


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.2%}"
    return f"{value:,.1f} {unit}"


def _why(run: pd.DataFrame, objective: str, target: float) -> str:
    if objective == "success_rate":
        failed = run.loc[~run["ok"], "error"].value_counts().head(3)
        return "failures: " + ", ".join(f"{n}× {error}" for error, n in failed.items())
    if objective == "min_throughput_rps":
        return "see the CPU report: was the generator the limit?"
    slow = run[run["latency_ms"] > target]
    return (f"{len(slow)} requests over {target:g} ms, due between "
            f"{slow['start_s'].min():.2f}s and {slow['start_s'].max():.2f}s")


def _describe(run: pd.DataFrame) -> str:
    mode = run.attrs.get("mode")
    if mode == "closed":
        return f"closed loop, {run.attrs['workers']} workers"
    if mode == "open":
        return f"open loop, {run.attrs['rate']:g} req/s offered"
    return mode or "requests"


# --------------------------------------------------------------------------- Locust


@dataclass
class LocustRun:
    """What a headless Locust run left behind, read into labkit's shapes."""

    requests: pd.DataFrame  # one row per request, columns as closed_loop's (if logged)
    history: pd.DataFrame   # one row per second, columns as timeline()'s, plus users
    stats: pd.DataFrame     # Locust's own table (…_stats.csv), as of its last snapshot
    cpu: CpuReport
    command: list[str]
    output: str             # what Locust printed: its summary tables


def run_locust(
    host: str,
    paths: str | Sequence[str] = "/",
    *,
    users: int,
    spawn_rate: float | None = None,
    duration_s: int = 10,
    headers: Mapping[str, str] | None = None,
    processes: int = 1,
    log_requests: bool = True,
    locustfile: Path = LOCUSTFILE,
    app_pid: int | None = None,
    csv_dir: Path | None = None,
) -> LocustRun:
    """Run Locust headless in a subprocess and read its CSV output.

    Locust runs outside this process on purpose: it monkey-patches the standard library
    with gevent on import, which would hang a Jupyter kernel. The default locustfile
    (``labkit/locustfiles/http_get.py``) has each user GET `paths` in turn, back to
    back: a closed loop, like ``closed_loop`` with ``workers=users``.

    `processes` > 1 forks that many Locust workers under one master on this machine
    (``--processes``). For more load than one machine can make, run the same locustfile
    distributed::

        locust -f http_get.py --master --headless -u 2000 -r 200 -t 60s \\
               --expect-workers 4 --csv run --host http://app:8000     # one machine
        locust -f http_get.py --worker --master-host <master address>  # on each other one

    The master only coordinates and aggregates; the workers make the load.
    With `log_requests`, each request is also written to a file, for ``requests``; turn
    it off when measuring Locust's top speed.
    """
    _require_positive(users=users, duration_s=duration_s, processes=processes)
    csv_dir = Path(csv_dir or tempfile.mkdtemp(prefix="labkit-locust-"))
    csv_dir.mkdir(parents=True, exist_ok=True)
    prefix = csv_dir / "locust"
    log_prefix = csv_dir / "requests"
    command = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        "-u", str(users), "-r", str(spawn_rate or users), "-t", f"{duration_s}s",
        "--host", host, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
        "--stop-timeout", "2",
    ]
    if processes > 1:
        command += ["--processes", str(processes)]
    paths = [paths] if isinstance(paths, str) else list(paths)
    env = {**os.environ, "LABKIT_LOCUST_PATHS": json.dumps(paths),
           "LABKIT_LOCUST_HEADERS": json.dumps(dict(headers or {}))}
    if log_requests:
        env["LABKIT_LOCUST_LOG"] = str(log_prefix)
    cpu, result = _run_measured(command, env, app_pid, timeout_s=duration_s + 60)
    # Locust exits 1 when some requests failed: that is a result to read, not a crash.
    if result.returncode not in (0, 1) or not prefix.with_name("locust_stats.csv").exists():
        raise LoadError(
            f"locust exited with code {result.returncode} and wrote no stats. Command: "
            f"{' '.join(command)}\nIts output:\n{result.stdout[-2000:]}\n"
            "Check the host URL and the locustfile; run the command in a terminal to see more."
        )
    _warn_if_generator_bound(cpu)
    raw_requests = _read_request_logs(log_prefix)
    # Both tables count time from the first request, like labkit's own runs.
    origin = float(raw_requests["epoch_s"].min()) if len(raw_requests) else None
    requests = _requests_frame(raw_requests, origin)
    requests.attrs.update(mode="locust", users=users, cpu=cpu)
    return LocustRun(
        requests=requests,
        history=read_locust_history(prefix.with_name("locust_stats_history.csv"), origin),
        stats=pd.read_csv(prefix.with_name("locust_stats.csv")),
        cpu=cpu,
        command=command,
        output=result.stdout,
    )


def _run_measured(
    command: list[str], env: Mapping[str, str], app_pid: int | None, timeout_s: float
) -> tuple[CpuReport, subprocess.CompletedProcess]:
    process = subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    meter = _CpuMeter(process.pid, app_pid, generator_children=True)
    meter.start()
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise LoadError(f"locust ran past {timeout_s:.0f}s and was killed: {' '.join(command)}")
        meter.sample()
        time.sleep(0.25)
    reader.join()
    return meter.stop(), subprocess.CompletedProcess(command, process.returncode, "".join(output))


def read_locust_history(path: Path | str, origin_epoch: float | None = None) -> pd.DataFrame:
    """Locust's ``…_stats_history.csv`` (Aggregated rows) in ``timeline()``'s shape.

    Time counts from `origin_epoch` (default: the first row with requests).
    Throughput comes from the growth of Locust's running totals between rows (its own
    Requests/s column is a rolling average that stays 0 for the first seconds). Mind
    two differences from labkit's runs: the percentiles here are cumulative since the
    start, so a short stall barely moves them; and the file is a snapshot rewritten
    every second, so the run's last partial second is missing.
    """
    raw = pd.read_csv(path)
    raw = raw[(raw["Name"] == "Aggregated") & (raw["Total Request Count"] > 0)]
    raw = raw.groupby("Timestamp").last()
    seconds = raw.index.to_series().diff()
    ok_total = raw["Total Request Count"] - raw["Total Failure Count"]
    frame = pd.DataFrame({
        "users": raw["User Count"],
        "rps": ok_total.diff() / seconds,
        "error_rps": raw["Total Failure Count"].diff() / seconds,
        "p50_ms": pd.to_numeric(raw["50%"], errors="coerce"),
        "p99_ms": pd.to_numeric(raw["99%"], errors="coerce"),
        "max_ms": pd.to_numeric(raw["100%"], errors="coerce"),
    })
    origin = frame.index.min() if origin_epoch is None else origin_epoch
    frame.index = (frame.index - origin).astype(float)
    frame.index.name = "t_s"
    return frame.iloc[1:]  # the first row has no interval before it to measure a rate over


def read_locust_requests(prefix: Path | str) -> pd.DataFrame:
    """The per-request files written by labkit's locustfile, in ``closed_loop``'s shape."""
    raw = _read_request_logs(Path(prefix))
    return _requests_frame(raw, float(raw["epoch_s"].min()) if len(raw) else None)


def _read_request_logs(prefix: Path) -> pd.DataFrame:
    names = ["epoch_s", "latency_ms", "status", "error"]
    files = sorted(prefix.parent.glob(prefix.name + ".*.csv"))
    parts = [pd.read_csv(f, names=names) for f in files]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)


def _requests_frame(raw: pd.DataFrame, origin_epoch: float | None) -> pd.DataFrame:
    rows = zip(raw["epoch_s"] - (origin_epoch or 0.0), raw["latency_ms"],
               itertools.repeat(0.0), raw["status"].fillna(0).astype(int),
               raw["error"].where(raw["error"].notna(), None))
    return _frame(rows)
