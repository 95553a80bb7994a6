"""Locust, run headless in a subprocess, read back into labkit's shapes."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from labkit.load._cpu import CpuMeter, CpuReport, warn_if_generator_bound
from labkit.load._errors import LoadError, require_positive
from labkit.load._server import free_port
from labkit.load._stats import run_frame

if TYPE_CHECKING:
    import pandas as pd

LOCUSTFILE = Path(__file__).parent / "locustfiles" / "http_get.py"


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
    workers: int = 0,
    remote_workers: int = 0,
    master_port: int | None = None,
    log_requests: bool = True,
    locustfile: Path = LOCUSTFILE,
    app_pid: int | None = None,
    csv_dir: Path | str | None = None,
) -> LocustRun:
    """Run Locust headless in subprocesses and read its CSV output.

    Locust runs outside this process on purpose: it monkey-patches the standard library
    with gevent on import, which would hang a Jupyter kernel. The default locustfile
    (``labkit/load/locustfiles/http_get.py``) has each user GET `paths` in turn, back to
    back: a closed loop, like ``closed_loop`` with ``workers=users``.

    Three ways to spread the users:

    - `processes` > 1 forks that many Locust processes under one (``--processes``).
    - `workers` > 0 runs Locust **distributed**: a master that coordinates and
      aggregates, and `workers` worker processes that make the load, each started on
      its own and talking to the master over TCP on 127.0.0.1 — as they do between
      machines.
    - `remote_workers` > 0 has the master also wait for that many workers started on
      other machines; it then listens on every interface, at `master_port` (default
      5557). On each of those machines, with the same locustfile::

          locust -f http_get.py --worker --master-host <this machine> --master-port 5557

      Paths, headers and the request log travel from the master to its workers, and
      each worker's requests come back to the master with its stats reports, so
      ``requests`` holds every worker's rows. CPU is measured on this machine only.

    With `log_requests`, each request is also written to a file, for ``requests``; turn
    it off when measuring Locust's top speed. Locust's CSV files are kept in `csv_dir`
    if given; otherwise they go to a temporary folder, removed once read.
    """
    import pandas as pd

    require_positive(users=users, duration_s=duration_s, processes=processes)
    if processes > 1 and (workers or remote_workers):
        raise ValueError(
            f"run_locust got processes={processes} and workers={workers}, remote_workers="
            f"{remote_workers}: choose one way to spread the users — processes forks them "
            "under one Locust, workers/remote_workers run Locust distributed")
    distributed = workers + remote_workers
    with contextlib.ExitStack() as cleanup:
        if csv_dir is None:  # read into the result below, then removed with its folder
            csv_dir = cleanup.enter_context(tempfile.TemporaryDirectory(
                prefix="labkit-locust-", ignore_cleanup_errors=True))
        folder = Path(csv_dir)
        folder.mkdir(parents=True, exist_ok=True)
        prefix = folder / "locust"
        log_prefix = folder / "requests"
        locust = [sys.executable, "-m", "locust", "-f", str(locustfile), "--loglevel", "WARNING"]
        command = [
            *locust, "--headless", "-u", str(users), "-r", str(spawn_rate or users),
            "-t", f"{duration_s}s", "--host", host, "--csv", str(prefix), "--only-summary",
            "--stop-timeout", "2",
        ]
        if processes > 1:
            command += ["--processes", str(processes)]
        worker_commands: list[list[str]] = []
        # Waiting for workers to connect comes before the run's own time.
        wait_s = 0
        if distributed:
            port = master_port or (5557 if remote_workers else free_port())
            wait_s = 120 if remote_workers else 30
            command += [
                "--master", "--master-bind-host", "*" if remote_workers else "127.0.0.1",
                "--master-bind-port", str(port), "--expect-workers", str(distributed),
                "--expect-workers-max-wait", str(wait_s),
            ]
            worker_commands = [
                [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
                for _ in range(workers)
            ]
        paths = [paths] if isinstance(paths, str) else list(paths)
        env = {**os.environ, "LABKIT_LOCUST_PATHS": json.dumps(paths),
               "LABKIT_LOCUST_HEADERS": json.dumps(dict(headers or {}))}
        if log_requests:
            env["LABKIT_LOCUST_LOG"] = str(log_prefix)
        # Workers get their options from the master, as they would on another machine.
        worker_env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_LOCUST_")}
        meter, result = _run_measured(command, env, worker_commands, worker_env, app_pid,
                                    timeout_s=duration_s + wait_s + 60)
        # Locust exits 1 when some requests failed: that is a result to read, not a crash.
        if result.returncode not in (0, 1) or not prefix.with_name("locust_stats.csv").exists():
            raise LoadError(
                f"locust exited with code {result.returncode} and wrote no stats. Command: "
                f"{' '.join(command)}\nIts output:\n{result.stdout[-2000:]}\n"
                "Check the host URL and the locustfile; to see more, run the command in a "
                "terminal (pass csv_dir=… to keep the folder it writes to)."
            )
        raw_requests = _read_request_logs(log_prefix)
        cpu = meter.stop(*_busy_window(raw_requests, prefix.with_name("locust_stats_history.csv")))
        warn_if_generator_bound(cpu)
        # Both tables count time from the first request, like labkit's own runs.
        origin = float(raw_requests["epoch_s"].min()) if len(raw_requests) else None
        requests = _requests_frame(raw_requests, origin)
        requests.attrs.update(mode="locust", users=users, workers=distributed, cpu=cpu)
        return LocustRun(
            requests=requests,
            history=read_locust_history(prefix.with_name("locust_stats_history.csv"), origin),
            stats=pd.read_csv(prefix.with_name("locust_stats.csv")),
            cpu=cpu,
            command=command,
            output=result.stdout,
        )


def _run_measured(
    command: list[str], env: Mapping[str, str], worker_commands: Sequence[list[str]],
    worker_env: Mapping[str, str], app_pid: int | None, timeout_s: float,
) -> tuple[CpuMeter, subprocess.CompletedProcess]:
    """Run `command` (Locust, or its master) and its workers; the run ends with it.

    The meter comes back sampled every 0.25 s and not yet stopped: its caller knows,
    from the requests, which part of the run to count."""
    main = _Process(command, env)
    workers = [_Process(worker, worker_env) for worker in worker_commands]
    everyone = [main, *workers]
    meter = CpuMeter([p.popen.pid for p in everyone], app_pid, generator_children=True)
    meter.start()
    deadline = time.monotonic() + timeout_s
    try:
        while main.popen.poll() is None:
            if time.monotonic() > deadline:
                raise LoadError(
                    f"locust ran past {timeout_s:.0f}s and was killed: {' '.join(command)}")
            meter.sample()
            time.sleep(0.25)
        # The master tells its workers to quit as it ends; a worker still there is stuck.
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.popen.wait(10)
        meter.sample()
    finally:
        for process in everyone:
            process.end()
    output = main.output()
    troubled = [w.output() for w in workers if w.popen.returncode not in (0, None)]
    if troubled or (workers and main.popen.returncode not in (0, 1)):
        output += "".join(f"\n--- a worker's output ---\n{text[-1000:]}"
                          for text in troubled or [w.output() for w in workers])
    return meter, subprocess.CompletedProcess(command, main.popen.returncode, output)


def _busy_window(raw_requests: pd.DataFrame, history: Path) -> tuple[float | None, float | None]:
    """When the load ran (epoch seconds): from the request log, or else from Locust's
    per-second history. The processes' start-up before it is not the load's CPU."""
    import pandas as pd

    if len(raw_requests):
        ends = raw_requests["epoch_s"] + raw_requests["latency_ms"] / 1000
        return float(raw_requests["epoch_s"].min()), float(ends.max())
    if history.exists():
        rows = pd.read_csv(history)
        busy = rows.loc[rows["Total Request Count"] > 0, "Timestamp"]
        if len(busy):  # each row covers the second before it
            return float(busy.min()) - 1, float(busy.max())
    return None, None


class _Process:
    """A Locust process whose output is collected as it runs (a full pipe would block it)."""

    def __init__(self, command: list[str], env: Mapping[str, str]) -> None:
        self.popen = subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        stdout = self.popen.stdout
        assert stdout is not None  # stdout=PIPE above
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=lambda: self._chunks.append(stdout.read()),
                                        daemon=True)
        self._reader.start()

    def end(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def output(self) -> str:
        self._reader.join(5)
        return "".join(self._chunks)


def read_locust_history(path: Path | str, origin_epoch: float | None = None) -> pd.DataFrame:
    """Locust's ``…_stats_history.csv`` (Aggregated rows) in ``timeline()``'s shape.

    Time counts from `origin_epoch` (default: the first row with requests).
    Throughput comes from the growth of Locust's running totals between rows (its own
    Requests/s column is a rolling average that stays 0 for the first seconds). Mind
    two differences from labkit's runs: the percentiles here are cumulative since the
    start, so a short stall barely moves them; and the file is a snapshot rewritten
    every second, so the run's last partial second is missing.
    """
    import pandas as pd

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
    import pandas as pd

    names = ["epoch_s", "latency_ms", "status", "error"]
    files = sorted(prefix.parent.glob(prefix.name + ".*.csv"))
    parts = [pd.read_csv(f, names=names) for f in files]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)


def _requests_frame(raw: pd.DataFrame, origin_epoch: float | None) -> pd.DataFrame:
    rows = zip(raw["epoch_s"] - (origin_epoch or 0.0), raw["latency_ms"],
               itertools.repeat(0.0), raw["status"].fillna(0).astype(int),
               raw["error"].where(raw["error"].notna(), None))
    return run_frame(rows)
