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
headless in subprocesses (``run_locust``): forked (``processes=``), or distributed, a
master and workers on this machine (``workers=``) or on others (``remote_workers=``),
every worker's requests coming back as rows of the same table.

``sweep`` runs one load per level for a capacity curve and ``find_knee`` reads the
capacity off it; ``slo_report`` and ``assert_slo`` check a run against objectives.
The package's modules are private, one job each: the app server, the CPU meter, the
runner and its connections, progress bars, statistics, sweeps, SLOs and Locust.
"""

from labkit.load._cpu import CpuReport
from labkit.load._errors import GeneratorBottleneckWarning, LoadError, SLOViolation
from labkit.load._locust import (
    LOCUSTFILE,
    LocustRun,
    read_locust_history,
    read_locust_requests,
    run_locust,
)
from labkit.load._runner import closed_loop, open_loop
from labkit.load._server import AppServer, serve_app, start_app
from labkit.load._slo import assert_slo, slo_report
from labkit.load._stats import COLUMNS, PERCENTILES, compare, summary, timeline
from labkit.load._sweep import find_knee, sweep

__all__ = [
    "COLUMNS",
    "LOCUSTFILE",
    "PERCENTILES",
    "AppServer",
    "CpuReport",
    "GeneratorBottleneckWarning",
    "LoadError",
    "LocustRun",
    "SLOViolation",
    "assert_slo",
    "closed_loop",
    "compare",
    "find_knee",
    "open_loop",
    "read_locust_history",
    "read_locust_requests",
    "run_locust",
    "serve_app",
    "slo_report",
    "start_app",
    "summary",
    "sweep",
    "timeline",
]
