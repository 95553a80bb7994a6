"""Load benchmark: the shop's capacity, and labkit's load generator against Locust's.

    .venv/bin/python benchmarks/load.py [--seconds 3]

Prints, in one run:

1. the demo shop's throughput and p99 on the cached profile endpoint at its knee
   (closed-loop sweep over concurrency, knee = least load with 90% of the best
   throughput);
2. the highest request rate labkit's runner reaches against a trivial endpoint
   (``labkit.load_demo:bare``, a raw ASGI app), next to Locust's on the same endpoint,
   as a ratio — and the same per core of generator CPU at that rate, which is fairer
   on a machine where generator and app share the cores;
3. the generator's CPU share in those runs.

Every figure is from this machine, with the app, its databases and the generator
sharing its cores: compare runs on the same machine, not across machines.
"""

from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd
import psutil
from sqlalchemy.orm import Session

from labkit import load

LEVELS = [1, 2, 4, 8, 16, 32]
PROFILE_USERS = 100
CORES = psutil.cpu_count() or 1


def shop_knee(seconds: float) -> pd.Series:
    from labkit.shop.data import create_engine_for
    from labkit.shop.testing import (
        add_user,
        auth_header,
        migrate_once,
        reset_shop_data,
        settings_from_services,
        shop_env,
    )

    settings = settings_from_services(password_hash_profile="fast")
    migrate_once(settings.database_url)
    engine = create_engine_for(settings)
    reset_shop_data(engine)
    with Session(engine) as session:
        ids = [add_user(session, commit=False).id for _ in range(PROFILE_USERS)]
        session.commit()
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


def _row(rps: float, cpu: load.CpuReport) -> dict[str, float]:
    return {"rps": rps, "generator_cores": cpu.generator_cores, "app_cores": cpu.app_cores,
            "machine_busy": cpu.machine_busy, "rps_per_generator_core": rps / cpu.generator_cores}


def _table(frame: pd.DataFrame) -> str:
    return frame.round(2).to_string()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per load level")
    args = parser.parse_args()
    warnings.simplefilter("ignore", load.GeneratorBottleneckWarning)  # saturating is the point
    began = time.perf_counter()

    knee = shop_knee(args.seconds)

    with load.serve_app("labkit.load_demo:bare") as bare:
        ours = labkit_max_rate(bare.url, bare.pid, args.seconds)
        theirs = locust_max_rate(bare.url, bare.pid, args.seconds)
    print("\nTrivial endpoint (raw ASGI 'pong'), labkit's runner (threads, closed loop)")
    print(_table(ours))
    print("\nSame endpoint, Locust (FastHttpUser, one process)")
    print(_table(theirs))

    best_ours, best_theirs = ours.loc[ours["rps"].idxmax()], theirs.loc[theirs["rps"].idxmax()]
    # At each generator's best rate: elsewhere a saturated machine leaves threads waiting
    # for a core, which flatters requests per CPU-second.
    per_core_ours = best_ours["rps_per_generator_core"]
    per_core_theirs = best_theirs["rps_per_generator_core"]
    print("\n".join([
        f"\n=== labkit load benchmark ({time.perf_counter() - began:.0f}s) ===",
        f"shop, cached profile endpoint, knee at {knee.name} workers:",
        (f"    throughput {knee['throughput_rps']:,.0f} req/s, p99 {knee['p99_ms']:.1f} ms "
        f"(app {knee['app_cores']:.2f} cores, generator {knee['generator_cores']:.2f} cores)"),
        "max request rate against a trivial endpoint:",
        (f"    labkit {best_ours['rps']:,.0f} req/s ({best_ours.name:.0f} workers) · Locust "
        f"{best_theirs['rps']:,.0f} req/s ({best_theirs.name:.0f} users) · "
        f"ratio labkit/Locust {best_ours['rps'] / best_theirs['rps']:.2f}"),
        (f"    per generator core: labkit {per_core_ours:,.0f} · Locust {per_core_theirs:,.0f} "
        f"req/s · ratio {per_core_ours / per_core_theirs:.2f}"),
        f"generator CPU share at those maxima ({CORES} cores):",
        _share("labkit", best_ours),
        _share("Locust", best_theirs),
    ]))


def _share(name: str, row: pd.Series) -> str:
    return (f"    {name} {row['generator_cores']:.2f} cores = {row['generator_cores'] / CORES:.0%} "
            f"of the machine (app {row['app_cores']:.2f} cores, machine "
            f"{row['machine_busy']:.0%} busy)")

if __name__ == "__main__":
    main()
