"""How many learners one server holds: a learner's kernel per lesson, and their tenant.

    python benchmarks/classroom_sizing.py                   # every lesson, ~15 min
    python benchmarks/classroom_sizing.py --lessons 00,02a  # a subset

Printed, never asserted. The room's servers (PostgreSQL, RabbitMQ with its management
API) are labkit's own, started here, and one learner is provisioned on them as `labkit
classroom provision` does. Each lesson runs in a fresh kernel with that learner's
environment only (their tenant's LABKIT_*_URL, as a hub's spawn or `labkit join` gives
it), every cell in order, LABKIT_SOLUTIONS=run by default (as a learner who solved each
exercise; ``--solutions hide`` leaves the stubs). The kernel starts its own private
Redis: lessons write unprefixed keys, which a Redis tenant (confined to a prefix) may
not, so a room shares no Redis, as `labkit up` does not.

Per lesson it prints the kernel's peak memory (RSS and USS of the kernel and every
process it started, its Redis included, sampled every 0.2 s), its CPU seconds, how long
the run took, and the cells that raised. Then the learner's share of the servers (the
servers' peak USS during the lessons over idle, their CPU while the lessons ran, the
learner's database on disk) and an idle JupyterLab's memory (the learner's single-user
server). Last, a room table built from these figures, with its assumptions printed
beside it: memory for every learner at their heaviest lesson at once, CPU for a share of
the learners running a cell at the same instant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import psutil
import psycopg
from nbclient import NotebookClient

from labkit import services
from labkit.classroom import Classroom, Learner

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SECONDS = 0.2
CELL_TIMEOUT = 900
MB = 1e6
# The room table's assumptions, printed with it.
SERVER_CORES, SERVER_GB = 4, 16
RESERVED_GB = 2.0  # the OS, JupyterHub, the proxy, page cache the servers need
BUSY_SHARE = 0.25  # of the learners, how many run a cell at the same instant
CPU_HEADROOM = 0.8  # of the cores, what the kernels may use before cells queue


@dataclass
class Run:
    lesson: str
    seconds: float
    peak_rss: float
    peak_uss: float
    cpu: float
    errors: list[str]


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def memory_of(processes: list[psutil.Process]) -> tuple[float, float]:
    rss = uss = 0
    for proc in processes:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, uss = rss + info.rss, uss + info.uss
    return rss / MB, uss / MB


class Sampler:
    """Peak memory and CPU time of some processes (found anew each time), sampled in a
    thread."""

    def __init__(self, processes: Callable[[], list[psutil.Process]]) -> None:
        self.processes = processes
        self.peak_rss = self.peak_uss = 0.0
        self.cpu: dict[int, float] = {}  # each process's last CPU seconds seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_SECONDS)

    def sample(self) -> None:
        processes = self.processes()
        rss, uss = memory_of(processes)
        self.peak_rss, self.peak_uss = max(self.peak_rss, rss), max(self.peak_uss, uss)
        for proc in processes:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            # a process's own time, plus its children's it has waited for (subprocesses)
            total = times.user + times.system + times.children_user + times.children_system
            self.cpu[proc.pid] = max(self.cpu.get(proc.pid, 0.0), total)

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()


def run_lesson(path: Path, learner: Learner, solutions: str, work: Path) -> Run:
    notebook = nbformat.read(path, as_version=4)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LABKIT_", "DATABASE_URL", "PG", "REDIS_URL", "AMQP_URL"))}
    env |= learner.env | {"LABKIT_SOLUTIONS": solutions, "LABKIT_STATE_DIR": str(work / "state"),
                          "JPY_SESSION_NAME": str(path)}
    copy = work / path.name
    copy.write_bytes(path.read_bytes())
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.monotonic()
    with client.setup_kernel(env=env):
        kernel = client.km.provisioner.process  # type: ignore[union-attr]
        sampler = Sampler(lambda: tree(kernel.pid))
        try:
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)
        finally:
            sampler.stop()
    errors = [f"{output['ename']}: {output['evalue'][:80]}" for cell in notebook.cells
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    return Run(path.stem, time.monotonic() - started, sampler.peak_rss, sampler.peak_uss,
               sum(sampler.cpu.values()), errors)


def server_processes(handles: dict[str, services.Handle]) -> list[psutil.Process]:
    return [proc for handle in handles.values()
            for proc in services.processes_of(handle.record)]  # type: ignore[attr-defined]


def jupyterlab_idle() -> tuple[float, float] | None:
    """RSS, USS of an idle JupyterLab server (a learner's single-user server), or None."""
    port = services.free_port()
    with tempfile.TemporaryDirectory() as home:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
             "--ServerApp.token=sizing", f"--ServerApp.root_dir={home}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": home, "HOME": home})
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=sizing",
                                           timeout=2).close()
                    time.sleep(2)  # extensions finish loading after the first answer
                    return memory_of(tree(server.pid))
                except OSError:
                    time.sleep(0.5)
            return None
        finally:
            server.terminate()
            server.wait(30)


def database_mb(admin_dsn: str, database: str) -> float:
    endpoint = services.specs()["postgres"].from_url(admin_dsn)
    with psycopg.connect(host=endpoint.host, port=endpoint.port, user=endpoint.username,
                         password=endpoint.password, dbname="postgres", autocommit=True) as conn:
        row = conn.execute("select pg_database_size(%s)", (database,)).fetchone()
    return (row[0] if row else 0) / MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", default="", help="comma-separated prefixes, e.g. 00,02a "
                        "(default: every lesson)")
    parser.add_argument("--solutions", choices=("run", "hide"), default="run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--table", type=Path, metavar="JSON",
                        help="only print the room table from figures a run wrote (--json)")
    args = parser.parse_args()
    if args.table:
        room_table(json.loads(args.table.read_text()))
        return
    prefixes = [p for p in args.lessons.split(",") if p]
    lessons = [path for path in sorted((ROOT / "notebooks").glob("*.ipynb"))
               if not prefixes or any(path.name.startswith(p) for p in prefixes)]
    if not lessons:
        sys.exit(f"no lesson in notebooks/ starts with {args.lessons}")

    os.environ["LABKIT_RABBITMQ_MANAGEMENT"] = "1"  # learners' vhosts are made through it
    # No shared Redis: lessons write unprefixed keys, which a Redis tenant (an ACL user
    # confined to its prefix) may not, so each learner's kernel starts a private
    # redis-server, as under `labkit up`; it is counted in the kernel's processes.
    handles = {name: services.start(name, "local") for name in ("postgres", "rabbitmq")}
    try:
        admin = services.TenantAdmin(
            postgres=handles["postgres"].endpoint.dsn,
            rabbitmq=handles["rabbitmq"].endpoint.extra["management_url"])
        with tempfile.TemporaryDirectory() as work:
            room = Classroom(admin, name="sizing", state_path=Path(work) / "room.json")
            time.sleep(2)
            idle = Sampler(lambda: server_processes(handles))
            idle.stop()
            learner = room.provision("learner")
            servers = Sampler(lambda: server_processes(handles))
            runs = []
            print(f"{'lesson':<28} {'time':>7} {'peak RSS':>9} {'peak USS':>9} {'CPU':>7}  errors")
            for path in lessons:
                run = run_lesson(path, learner, args.solutions, Path(work))
                runs.append(run)
                print(f"{run.lesson:<28} {run.seconds:6.0f}s {run.peak_rss:7.0f}MB "
                      f"{run.peak_uss:7.0f}MB {run.cpu:6.1f}s  {len(run.errors) or ''}", flush=True)
                for error in run.errors:
                    print(f"    {error}")
            servers.stop()
            share = servers.peak_uss - idle.peak_uss
            lessons_seconds = sum(run.seconds for run in runs)
            server_cores = (sum(servers.cpu.values()) - sum(idle.cpu.values())) / lessons_seconds
            disk = database_mb(handles["postgres"].endpoint.dsn, learner.tenant)
            room.revoke("learner")
        lab = jupyterlab_idle()
    finally:
        for handle in handles.values():
            handle.stop()

    figures = {"runs": [run.__dict__ for run in runs], "server_share_mb": max(share, 0.0),
               "server_cores": server_cores, "database_mb": disk,
               "jupyterlab_idle_mb": lab[1] if lab else 0.0}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    print()
    print(f"learner's share of the servers: {share:.0f} MB USS at the peak of the lessons "
          f"over idle, {server_cores:.2f} core on average while they ran, database "
          f"{disk:.1f} MB on disk")
    if lab:
        print(f"idle JupyterLab (the learner's single-user server): {lab[0]:.0f} MB RSS, "
              f"{lab[1]:.0f} MB USS")
    print(f"median kernel peak USS {statistics.median(r.peak_uss for r in runs):.0f} MB")
    print()
    room_table(figures)


def room_table(figures: dict[str, Any]) -> None:
    """How many learners a server holds, per lesson and through the whole course."""
    available = (SERVER_GB - RESERVED_GB) * 1000
    print(f"room table: a {SERVER_CORES}-core {SERVER_GB} GB server. Assumed: {RESERVED_GB:.0f} "
          f"GB kept for the OS, the hub and the servers' caches; every learner in the same "
          f"lesson; {BUSY_SHARE:.0%} of them running a cell at the same instant, on at most "
          f"{CPU_HEADROOM:.0%} of the cores. Per learner: the kernel's peak USS, an idle "
          f"JupyterLab ({figures['jupyterlab_idle_mb']:.0f} MB), the servers' share "
          f"({figures['server_share_mb']:.0f} MB, {figures['server_cores']:.2f} core).")
    print(f"  {'lesson':<26} {'MB/learner':>10} {'core/running':>12} {'by memory':>10} "
          f"{'by CPU':>7} {'learners':>9}")
    fewest: dict[str, int] = {}
    for run in figures["runs"]:
        megabytes = run["peak_uss"] + figures["jupyterlab_idle_mb"] + figures["server_share_mb"]
        cores = run["cpu"] / run["seconds"] + figures["server_cores"]
        by_memory = int(available / megabytes)
        by_cpu = int(SERVER_CORES * CPU_HEADROOM / (cores * BUSY_SHARE))
        fewest[run["lesson"]] = min(by_memory, by_cpu)
        print(f"  {run['lesson']:<26} {megabytes:10.0f} {cores:12.2f} {by_memory:10d} "
              f"{by_cpu:7d} {fewest[run['lesson']]:9d}")
    worst = min(fewest, key=lambda lesson: fewest[lesson])
    others = [n for lesson, n in fewest.items() if lesson != worst]
    print(f"a {SERVER_CORES}-core {SERVER_GB} GB server holds {fewest[worst]} learners working at "
          f"once through every lesson (bound by {worst})"
          + (f"; {min(others)} through every other lesson" if others else ""))

if __name__ == "__main__":
    main()
