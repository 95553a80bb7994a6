"""Shop speed: the demo shop's knee on its cached profile endpoint, 1 and 2 workers,
and (with --profile) where its hot paths spend their time.

    .venv/bin/python benchmarks/shop_speed.py [--seconds 3] [--workers 1 2]
    .venv/bin/python benchmarks/shop_speed.py --profile [--top 25]   # needs py-spy

Prints, for each number of uvicorn workers: the closed-loop sweep over 1…32 load
workers on ``GET /api/users/{id}/profile`` with the cache warm, and its knee (req/s,
p99, app cores, generator cores). Per app core is throughput / app cores: the target
of issue #12 is ≥ 2,000 req/s per app core with p99 ≤ 10 ms at the knee, one worker.

With --profile, py-spy (``pip install py-spy``: a sampling profiler, not a labkit
dependency) samples the served shop (one worker) while load runs on each hot path —
the cached profile read, sign-up, an order — and prints, for each, the text form of a
flame graph: the top frames by self time, self time by package, and the shop's own
frames by total time (what they and their callees took).

Every figure is from this machine, app, databases and generator sharing its cores:
compare runs on the same machine, and read the load average printed with them.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd

from labkit import load
from labkit.shop.settings import ShopSettings
from labkit.shop.testing import shop_with_users

LEVELS = [1, 2, 4, 8, 16, 32]
PROFILE_USERS = 100
PROFILE_LOAD_WORKERS = 8


@contextmanager
def shop_served(workers: int, settings: ShopSettings) -> Iterator[load.AppServer]:
    from labkit.shop.testing import shop_env

    with load.serve_app("labkit.shop.testing:shop", factory=True, workers=workers,
                        env=shop_env(settings), ready_path="/health") as shop:
        yield shop


def profile_paths(ids: list[uuid.UUID]) -> Callable[[int], str]:
    def profile(i: int) -> str:
        return f"/api/users/{ids[i % len(ids)]}/profile"

    return profile


def swept(workers: int, settings: ShopSettings, ids: list[uuid.UUID], seconds: float
          ) -> pd.DataFrame:
    from labkit.shop.testing import auth_header

    token = auth_header(settings, ids[0])
    path = profile_paths(ids)
    with shop_served(workers, settings) as shop:
        # Warm every worker's cache and pools: each user's profile, several times over.
        load.closed_loop(shop.url, path, workers=8, requests=8 * PROFILE_USERS,
                         headers=token, progress=False)
        sweep = load.sweep(shop.url, path, workers=LEVELS, duration_s=seconds,
                           headers=token, app_pid=shop.pid)
    sweep["rps_per_app_core"] = sweep["throughput_rps"] / sweep["app_cores"]
    print(f"\nshop with {workers} uvicorn worker(s), GET profile, cache warm: closed-loop sweep")
    print(sweep[["throughput_rps", "p50_ms", "p99_ms", "app_cores", "generator_cores",
                 "rps_per_app_core"]].round(2).to_string())
    return sweep


# -- profiling ---------------------------------------------------------------------------


def hammer(url: str, send: Callable[[httpx.Client, int], httpx.Response], workers: int,
           seconds: float) -> collections.Counter[int]:
    """`workers` threads calling `send` back to back for `seconds`; the status counts.

    Only for keeping the app busy while it is sampled: labkit's runner sends GETs,
    sign-up and orders are POSTs with a body each.
    """
    statuses: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    numbers = iter(range(10**9))

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                with lock:
                    n = next(numbers)
                status = send(client, n).status_code
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def sampled(pid: int, seconds: float, load_for: Callable[[], collections.Counter[int]],
            rate: int = 250) -> tuple[collections.Counter[str], collections.Counter[str], int,
                                     collections.Counter[int]]:
    """py-spy samples `pid` while `load_for()` runs: (self, total, samples, statuses)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="shop-speed-") as folder:
        raw = Path(folder) / "stacks.txt"
        recorder = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--gil",
             "--duration", str(int(seconds)), "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(0.5)  # py-spy attaches
        statuses = load_for()
        _, err = recorder.communicate(timeout=seconds + 30)
        if recorder.returncode != 0:
            raise RuntimeError(f"py-spy failed ({recorder.returncode}): {err.strip()[-500:]}")
        return (*collapsed_summary(raw.read_text()), statuses)


def collapsed_summary(text: str) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """Self and total samples per frame from py-spy's collapsed stacks (``a;b;c N``).

    Sampled with ``--gil``, only the thread holding the GIL counts: the figures are
    shares of the time the app ran Python (or C holding the GIL), not of its waits.
    """
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_short(f) for f in stack.split(";")]
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return own, total, samples


_INSTALLED = re.compile(r".*/(?:site-packages|lib/python3\.\d+)/")


def _short(frame: str) -> str:
    """``send (/…/site-packages/uvicorn/protocols/http/h.py:493)`` → ``send (uvicorn/…/h.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    if "/labkit/" in where:
        where = "labkit/" + where.rsplit("/labkit/", 1)[1]
    else:
        where = _INSTALLED.sub("", where)
    return f"{name} ({where})"


def print_profile(title: str, own: collections.Counter[str], total: collections.Counter[str],
                  samples: int, statuses: collections.Counter[int], top: int) -> None:
    answered = ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
    print(f"\n## {title}: {samples} samples holding the GIL ({answered})")
    print(f"{'self':>6}  top frames by self time")
    for frame, n in own.most_common(top):
        print(f"{n / samples:6.1%}  {frame}")
    packages: collections.Counter[str] = collections.Counter()
    for frame, n in own.items():
        packages[_package(frame)] += n
    print(f"{'self':>6}  by package")
    for package, n in packages.most_common(12):
        print(f"{n / samples:6.1%}  {package}")
    print(f"{'total':>6}  the shop's own frames by total time (what they call included)")
    for frame, n in [(f, n) for f, n in total.most_common() if "(labkit/" in f][:top]:
        print(f"{n / samples:6.1%}  {frame}")


def _package(frame: str) -> str:
    where = frame.rpartition(" (")[2].rstrip(")")
    if where.startswith("labkit/"):
        return "/".join(where.split("/")[:3])
    return where.split("/")[0].removesuffix(".py") if "/" in where else f"stdlib {where}"


Sender = Callable[[httpx.Client, int], httpx.Response]


def writes(token: dict[str, str]) -> tuple[Sender, Sender]:
    """A sign-up and an order, each made unique by the number it is sent with."""
    run = uuid.uuid4().hex[:8]

    def signup(client: httpx.Client, n: int) -> httpx.Response:
        return client.post("/api/users", json={
            "email": f"speed-{run}-{n}@example.com", "name": "Speed Test",
            "password": "correct horse battery"})

    def order(client: httpx.Client, n: int) -> httpx.Response:
        return client.post("/api/orders", headers=token, json={
            "items": [{"productId": f"SKU-{n}", "quantity": 1, "unitPrice": "9.99"}],
            "paymentMethod": "CARD"})

    return signup, order


def profile_hot_paths(seconds: float, top: int) -> None:
    from labkit.shop.testing import auth_header
    from labkit.shop.testing.fakes import FakeDownstream

    with FakeDownstream() as fakes:
        settings, ids = shop_with_users(PROFILE_USERS, **fakes.settings())
        token = auth_header(settings, ids[0])
        path = profile_paths(ids)
        with shop_served(1, settings) as shop:
            load.closed_loop(shop.url, path, workers=8, requests=8 * PROFILE_USERS,
                             headers=token, progress=False)

            def cached_profile(client: httpx.Client, n: int) -> httpx.Response:
                return client.get(path(n), headers=token)

            signup, order = writes(token)

            for title, send in [("cached profile read", cached_profile),
                                ("sign-up", signup), ("order", order)]:
                result = sampled(shop.pid, seconds, lambda send=send: hammer(
                    shop.url, send, PROFILE_LOAD_WORKERS, seconds))
                print_profile(title, *result, top=top)


def measure_hot_paths(rounds: int) -> list[str]:
    """Sign-up and order, one request at a time (latency, the app's CPU per request)
    and from 8 threads at once (throughput): the paths that wait on other services."""
    import psutil

    from labkit.shop.testing import auth_header
    from labkit.shop.testing.fakes import FakeDownstream

    lines = ["sign-up and order (1 worker, fakes for inventory and payment in this process):"]
    with FakeDownstream() as fakes:
        settings, ids = shop_with_users(PROFILE_USERS, **fakes.settings())
        token = auth_header(settings, ids[0])
        signup, order = writes(token)
        numbers = iter(range(10**9))

        with shop_served(1, settings) as shop:
            app = psutil.Process(shop.pid)
            with httpx.Client(base_url=shop.url, timeout=10.0, trust_env=False) as client:
                for title, write in [("sign-up", signup), ("order", order)]:
                    def send(client: httpx.Client, write: Sender = write) -> httpx.Response:
                        return write(client, next(numbers))

                    for _ in range(20):  # warm pools, caches, the broker connection
                        send(client)
                    latencies = []
                    cpu_before = sum(app.cpu_times()[:2])
                    for _ in range(rounds):
                        began = time.perf_counter()
                        response = send(client)
                        latencies.append(time.perf_counter() - began)
                        if response.status_code != 201:
                            raise RuntimeError(f"{title} answered {response.status_code}: "
                                               f"{response.text[:300]}")
                    cpu = (sum(app.cpu_times()[:2]) - cpu_before) / rounds
                    cpu_before, began = sum(app.cpu_times()[:2]), time.perf_counter()
                    statuses = hammer(shop.url, lambda c, _n, send=send: send(c),
                                      PROFILE_LOAD_WORKERS, 5.0)
                    seconds = time.perf_counter() - began
                    cores = (sum(app.cpu_times()[:2]) - cpu_before) / seconds
                    answered = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
                    lines.append(
                        f"    {title:8} one at a time: p50 {1e3 * pd.Series(latencies).median():.1f} ms,"
                        f" p99 {1e3 * pd.Series(latencies).quantile(0.99):.1f} ms, app CPU "
                        f"{1e3 * cpu:.2f} ms per request; {PROFILE_LOAD_WORKERS} at once: "
                        f"{statuses[201] / seconds:,.0f} req/s, app {cores:.2f} cores ({answered})")
    return lines


def floors(seconds: float, shop_knee: pd.Series) -> list[str]:
    """The knee per app core, one worker, of what the shop's cached read stands on: uvicorn
    with a raw ASGI app, and FastAPI with the profile route's dependencies doing no work
    (benchmarks/fastapi_floor.py), in the same run as the shop's."""
    import fastapi_floor

    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                         os.environ.get("PYTHONPATH")]))}
    per_core = {}
    for name, app, path, headers in [
        ("uvicorn, a raw ASGI app", "labkit.load_demo:bare", "/", None),
        ("FastAPI, the route's dependencies, no work", "fastapi_floor:app",
         f"/api/users/{fastapi_floor.USER}/profile",
         {"Authorization": f"Bearer {fastapi_floor.TOKEN}"}),
    ]:
        with load.serve_app(app, env=env, ready_path=path) as server:
            sweep = load.sweep(server.url, path, workers=LEVELS[:5], duration_s=seconds,
                               headers=headers, app_pid=server.pid)
        knee = sweep.loc[load.find_knee(sweep)]
        per_core[name] = knee["throughput_rps"] / knee["app_cores"]
    shop = shop_knee["rps_per_app_core"]
    fastapi = per_core["FastAPI, the route's dependencies, no work"]
    share = (f"    the shop's cached read: {shop:,.0f} req/s per app core = "
             f"{shop / fastapi:.2f} of FastAPI's floor for its route")
    return ["what it stands on (1 worker, knee per app core, this run):"] + [
        f"    {name}: {rps:,.0f} req/s per app core" for name, rps in per_core.items()
    ] + [share]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per load level")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="uvicorn worker counts to measure")
    parser.add_argument("--profile", action="store_true",
                        help="sample the hot paths with py-spy instead of sweeping")
    parser.add_argument("--top", type=int, default=20, help="frames per profile table")
    parser.add_argument("--paths", action="store_true",
                        help="only sign-up and order: latency, app CPU per request, req/s")
    parser.add_argument("--rounds", type=int, default=200,
                        help="requests one at a time per path (with --paths)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", load.GeneratorBottleneckWarning)
    began = time.perf_counter()
    if args.profile:
        profile_hot_paths(max(args.seconds, 5.0), args.top)
        return
    if args.paths:
        print("\n".join(measure_hot_paths(args.rounds)))
        return
    settings, ids = shop_with_users(PROFILE_USERS)
    sweeps = {workers: swept(workers, settings, ids, args.seconds) for workers in args.workers}
    knees = {workers: sweep.loc[load.find_knee(sweep)].rename(load.find_knee(sweep))
             for workers, sweep in sweeps.items()}
    lines = [(f"\n=== shop speed ({time.perf_counter() - began:.0f}s, "
              f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores) ==="),
             "cached profile endpoint (GET /api/users/{id}/profile), knee of a closed-loop sweep:"]
    for workers, row in knees.items():
        lines.append(
            f"    {workers} worker{'s' if workers > 1 else ' '}: knee at {row.name} load workers, "
            f"{row['throughput_rps']:,.0f} req/s, p99 {row['p99_ms']:.1f} ms, app "
            f"{row['app_cores']:.2f} cores = {row['rps_per_app_core']:,.0f} req/s per app core "
            f"(generator {row['generator_cores']:.2f} cores)")
    if 1 in knees and 2 in knees:
        ratio = knees[2]["throughput_rps"] / knees[1]["throughput_rps"]
        cores = knees[2]["app_cores"] / knees[1]["app_cores"]
        # Linear scaling is 2 x the throughput from 2 x the cores; on a machine whose
        # cores the generator, Redis and others share, the second worker gets less than
        # a core, so the throughput per app core is what says whether workers scale.
        lines.append(f"    2 workers / 1 worker: {ratio:.2f} x the throughput from {cores:.2f} x "
                     f"the app's cores: {ratio / cores:.2f} of linear scaling per core "
                     f"(machine busy {100 * knees[2]['machine_busy']:.0f}% at the 2 workers' knee)")
    lines += floors(args.seconds, knees[args.workers[0]])
    # One request at a time, nothing queues: the app's CPU per request, which a busy
    # machine moves less than it moves the knee (where the app waits for a core).
    alone = sweeps[args.workers[0]].loc[1]
    lines.append(f"one request at a time ({args.workers[0]} worker): "
                 f"{1e6 * alone['app_cores'] / alone['throughput_rps']:,.0f} µs of app CPU per "
                 f"request = {alone['rps_per_app_core']:,.0f} req/s per app core")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
