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
    log_requests: bool = True,
    locustfile: Path = LOCUSTFILE,
    app_pid: int | None = None,
    csv_dir: Path | str | None = None,
) -> LocustRun:
    """Run Locust headless in a subprocess and read its CSV output.

    Locust runs outside this process on purpose: it monkey-patches the standard library
    with gevent on import, which would hang a Jupyter kernel. The default locustfile
    (``labkit/load/locustfiles/http_get.py``) has each user GET `paths` in turn, back to
    back: a closed loop, like ``closed_loop`` with ``workers=users``.

    `processes` > 1 forks that many Locust workers under one master on this machine
    (``--processes``). For more load than one machine can make, run the same locustfile
    distributed::

        locust -f http_get.py --master --headless -u 2000 -r 200 -t 60s \\
               --expect-workers 4 --csv run --host http://app:8000     # one machine
        locust -f http_get.py --worker --master-host <master address>  # on each other one

    The master only coordinates and aggregates; the workers make the load.
    With `log_requests`, each request is also written to a file, for ``requests``; turn
    it off when measuring Locust's top speed. Locust's CSV files are kept in `csv_dir`
    if given; otherwise they go to a temporary folder, removed once read.
    """
    import pandas as pd

    require_positive(users=users, duration_s=duration_s, processes=processes)
    with contextlib.ExitStack() as cleanup:
        if csv_dir is None:  # read into the result below, then removed with its folder
            csv_dir = cleanup.enter_context(tempfile.TemporaryDirectory(
                prefix="labkit-locust-", ignore_cleanup_errors=True))
        folder = Path(csv_dir)
        folder.mkdir(parents=True, exist_ok=True)
        prefix = folder / "locust"
        log_prefix = folder / "requests"
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
                "Check the host URL and the locustfile; to see more, run the command in a "
                "terminal (pass csv_dir=… to keep the folder it writes to)."
            )
        warn_if_generator_bound(cpu)
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
    meter = CpuMeter(process.pid, app_pid, generator_children=True)
    meter.start()
    output: list[str] = []
    stdout = process.stdout
    assert stdout is not None  # stdout=PIPE above
    reader = threading.Thread(target=lambda: output.append(stdout.read()), daemon=True)
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
