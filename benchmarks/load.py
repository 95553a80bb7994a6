"""Load benchmark: the shop's capacity, and labkit's load generator against Locust's and wrk's.

    .venv/bin/python benchmarks/load.py [--seconds 3]

Prints, in one run:

1. the demo shop's throughput and p99 on the cached profile endpoint at its knee
   (closed-loop sweep over concurrency, knee = least load with 90% of the best
   throughput);
2. the highest request rate labkit's runner reaches against a trivial endpoint
   (``labkit.load_demo:bare``, a raw ASGI app), next to Locust's (FastHttpUser) and
   wrk's (a C load generator: the machine's limit) on the same endpoint, as ratios —
   and the same per core of generator CPU at that rate, which is fairer on a machine
   where generator and app share the cores;
3. the generator's CPU share in those runs.

wrk comes from the OS: where it is missing, this installs Debian's package
(``apt-get install -y wrk``) if it can, and otherwise says how and leaves wrk out.

Every figure is from this machine, with the app, its databases and the generator
sharing its cores: compare runs on the same machine, not across machines.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass

import pandas as pd
import psutil

from labkit import load

LEVELS = [1, 2, 4, 8, 16, 32]
PROFILE_USERS = 100
CORES = psutil.cpu_count() or 1


def shop_knee(seconds: float) -> pd.Series:
    from labkit.shop.testing import auth_header, shop_env, shop_with_users

    settings, ids = shop_with_users(PROFILE_USERS)
    token = auth_header(settings, ids[0])

    def profile(i: int) -> str:
        return f"/api/users/{ids[i % PROFILE_USERS]}/profile"

    with load.serve_app("labkit.shop.testing:shop", factory=True,
                        env=shop_env(settings), ready_path="/health") as shop:
        load.closed_loop(shop.url, profile, workers=4, requests=4 * PROFILE_USERS,
                         headers=token, progress=False)  # warm the cache
        sweep = load.sweep(shop.url, profile, workers=LEVELS, duration_s=seconds,
                           headers=token, app_pid=shop.pid)
    print("\nProfile endpoint, cache warm: closed-loop sweep")
    print(_table(sweep))
    knee = load.find_knee(sweep)
    return sweep.loc[knee].rename(knee)


def labkit_max_rate(url: str, pid: int, seconds: float) -> pd.DataFrame:
    rows = {}
    for workers in LEVELS:
        run = load.closed_loop(url, "/", workers=workers, duration_s=seconds, app_pid=pid,
                               progress=False)
        rows[workers] = _row(load.summary(run)["throughput_rps"], run.attrs["cpu"])
    return pd.DataFrame(rows).T.rename_axis("workers")


def locust_max_rate(url: str, pid: int, seconds: float) -> pd.DataFrame:
    rows = {}
    for users in LEVELS:
        result = load.run_locust(url, "/", users=users, duration_s=max(int(seconds) + 1, 3),
                                 app_pid=pid, log_requests=False)
        # Locust's own figure: its requests over its own run time (Aggregated row).
        rows[users] = _row(result.stats["Requests/s"].iloc[-1], result.cpu)
    return pd.DataFrame(rows).T.rename_axis("users")


def wrk_max_rate(wrk: str, url: str, pid: int, seconds: float) -> pd.DataFrame:
    rows = {}
    for connections in LEVELS:
        # One wrk thread: one core at most, like one Python process.
        command = [wrk, "-t1", f"-c{connections}", f"-d{max(round(seconds), 1)}s", url + "/"]
        before = _CpuClock.now(pid)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed (exit {done.returncode}): {' '.join(command)}\n"
                               f"{done.stdout}{done.stderr}")
        rows[connections] = _row(float(match.group(1)), before.report_since(pid))
    return pd.DataFrame(rows).T.rename_axis("connections")


@dataclass(frozen=True)
class _CpuClock:
    """CPU times at an instant: this process's reaped children (wrk, once it exited),
    the app and the machine — what labkit.load measures for its own runs and Locust's."""

    wall: float
    children: float
    app: float
    machine_total: float
    machine_idle: float

    @classmethod
    def now(cls, app_pid: int) -> _CpuClock:
        mine, app, machine = os.times(), psutil.Process(app_pid).cpu_times(), psutil.cpu_times()
        return cls(time.perf_counter(), mine.children_user + mine.children_system,
                   app.user + app.system, sum(machine), machine.idle)

    def report_since(self, app_pid: int) -> load.CpuReport:
        end = _CpuClock.now(app_pid)
        wall, total = end.wall - self.wall, end.machine_total - self.machine_total
        return load.CpuReport(
            generator_cores=(end.children - self.children) / wall,
            app_cores=(end.app - self.app) / wall,
            machine_busy=1 - (end.machine_idle - self.machine_idle) / total if total else 0.0,
            machine_cores=CORES,
        )


def find_wrk() -> str | None:
    """wrk's path; where it is missing, installed from Debian's package if possible."""
    if shutil.which("wrk") is None and shutil.which("apt-get") and os.geteuid() == 0:
        print("wrk is not installed: apt-get install -y wrk …", flush=True)
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, capture_output=True, check=False).returncode != 0:
            # A fresh image has no package lists yet.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
            subprocess.run(install, capture_output=True, check=False)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed and could not be installed here (that takes apt-get and "
              "root). Install it to see the machine's limit — Debian/Ubuntu: sudo apt-get "
              "install wrk; macOS: brew install wrk — then run this again. Left out below.")
    return wrk


def _row(rps: float, cpu: load.CpuReport) -> dict[str, float]:
    return {"rps": rps, "generator_cores": cpu.generator_cores, "app_cores": cpu.app_cores,
            "machine_busy": cpu.machine_busy, "rps_per_generator_core": rps / cpu.generator_cores}


def _table(frame: pd.DataFrame) -> str:
    return frame.round(2).to_string()


def _best(frame: pd.DataFrame) -> pd.Series:
    # At each generator's best rate: elsewhere a saturated machine leaves threads waiting
    # for a core, which flatters requests per CPU-second.
    return frame.loc[frame["rps"].idxmax()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per load level")
    args = parser.parse_args()
    warnings.simplefilter("ignore", load.GeneratorBottleneckWarning)  # saturating is the point
    began = time.perf_counter()
    wrk = find_wrk()

    knee = shop_knee(args.seconds)

    generators: dict[str, pd.DataFrame] = {}
    with load.serve_app("labkit.load_demo:bare") as bare:
        generators["labkit"] = labkit_max_rate(bare.url, bare.pid, args.seconds)
        generators["Locust"] = locust_max_rate(bare.url, bare.pid, args.seconds)
        if wrk:
            generators["wrk"] = wrk_max_rate(wrk, bare.url, bare.pid, args.seconds)
    titles = {
        "labkit": "labkit's runner (threads, closed loop, one row per request)",
        "Locust": "Locust (FastHttpUser, one process, no per-request log)",
        "wrk": "wrk (C, one thread)",
    }
    print("\nTrivial endpoint (raw ASGI 'pong'), one generator after the other")
    for name, frame in generators.items():
        print(f"\n{titles[name]}\n{_table(frame)}")

    best = {name: _best(frame) for name, frame in generators.items()}
    lines = [
        f"\n=== labkit load benchmark ({time.perf_counter() - began:.0f}s) ===",
        f"shop, cached profile endpoint, knee at {knee.name} workers:",
        (f"    throughput {knee['throughput_rps']:,.0f} req/s, p99 {knee['p99_ms']:.1f} ms "
         f"(app {knee['app_cores']:.2f} cores, generator {knee['generator_cores']:.2f} cores)"),
        "max request rate against a trivial endpoint:",
        "    " + " · ".join(f"{name} {row['rps']:,.0f} req/s ({row.name:.0f} {unit})"
                            for (name, row), unit in zip(best.items(),
                                                         ["workers", "users", "connections"])),
        "    per generator core: " + " · ".join(
            f"{name} {row['rps_per_generator_core']:,.0f}" for name, row in best.items()),
    ]
    for other in [name for name in best if name != "labkit"]:
        ours, theirs = best["labkit"], best[other]
        lines.append(
            f"    labkit/{other}: {ours['rps'] / theirs['rps']:.2f} in req/s, "
            f"{ours['rps_per_generator_core'] / theirs['rps_per_generator_core']:.2f} "
            "per generator core")
    lines.append(f"generator CPU share at those maxima ({CORES} cores):")
    lines += [_share(name, row) for name, row in best.items()]
    print("\n".join(lines))


def _share(name: str, row: pd.Series) -> str:
    return (f"    {name} {row['generator_cores']:.2f} cores = {row['generator_cores'] / CORES:.0%} "
            f"of the machine (app {row['app_cores']:.2f} cores, machine "
            f"{row['machine_busy']:.0%} busy)")


if __name__ == "__main__":
    main()
