"""Isolation benchmark: time-to-ready of each service, and what per-test isolation costs.

    .venv/bin/python benchmarks/isolation.py [--backend local --backend docker] [--rounds 200]

For each backend that can serve here (local when the binaries are installed, docker
when an engine answers, external when LABKIT_<SERVICE>_URL is set; or only those given
with --backend), it prints:

1. each service's time-to-ready from nothing (PostgreSQL, Redis, RabbitMQ);
2. the per-test cost of four ways to isolate database tests (labkit.isolation):
   SAVEPOINT rollback (labkit's db_session), DELETE, TRUNCATE, and a fresh database
   from a template — median and p95 over --rounds simulated tests;
3. whether SAVEPOINT isolation meets its target (median ≤ 1 ms per test).

The verdict is printed, never asserted: timings belong to the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

from labkit import services
from labkit.isolation import SAVEPOINT_TARGET_SECONDS, measure_isolation, summarize
from labkit.sql import engine_for

SERVICES = ("postgres", "redis", "rabbitmq")


def available_backends() -> list[str]:
    """local if any server binary is found, docker if an engine answers, external if URLs
    are set, tenant if admin URLs are set or `labkit up` runs for this project."""
    backends = []
    if any(_can_serve(name, "local") for name in SERVICES):
        backends.append("local")
    if services.engine_answers():
        backends.append("docker")
    if any(os.environ.get(services.specs()[name].url_env) for name in SERVICES):
        backends.append("external")
    if any(services.admin_url(name) for name in SERVICES):
        backends.append("tenant")
    return backends


def _can_serve(name: str, backend: str) -> bool:
    previous = os.environ.get("LABKIT_BACKEND")
    os.environ["LABKIT_BACKEND"] = backend
    try:
        services.check(name)
        return True
    except services.ServiceError:
        return False
    finally:
        _restore("LABKIT_BACKEND", previous)


def _restore(variable: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = value


def time_to_ready(backend: str) -> list[dict]:
    """Start each service from nothing on `backend`; what it took, or why it could not."""
    rows = []
    for name in SERVICES:
        services.stop(name)
        began = time.perf_counter()
        try:
            endpoint = services.get(name)
        except services.ServiceError as exc:
            rows.append({"service": name, "ready": None, "note": str(exc).splitlines()[0][:120]})
            continue
        wall = time.perf_counter() - began
        note = "given by URL: already running" if backend == "external" else endpoint.origin
        rows.append({"service": name, "ready": wall, "note": note})
    return rows


def bench_backend(backend: str, rounds: int) -> None:
    os.environ["LABKIT_BACKEND"] = backend
    print(f"\n=== backend: {backend} ===")
    ready = time_to_ready(backend)
    print("time-to-ready from nothing (start + wait until the server answers a real request):")
    for row in ready:
        seconds = "   skipped" if row["ready"] is None else f"{row['ready']:8.2f} s"
        print(f"  {row['service']:<9} {seconds}   {row['note']}")

    if "postgres" not in services.running():
        print("database isolation: skipped (no postgres on this backend)")
        return
    engine = engine_for(services.get("postgres").url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        costs = measure_isolation(engine, rounds=rounds)
    for warning in caught:
        print(f"  note: {warning.message}")
    summary = summarize(costs)
    print(f"per-test isolation cost (setup + teardown, {rounds} rounds each; body = the test's own work):")
    print(f"  {'strategy':<18} {'median':>9} {'p95':>9} {'× savepoint':>12} {'body median':>12}")
    base = summary.loc["savepoint", "median ms"]
    for strategy, row in summary.iterrows():
        print(
            f"  {strategy:<18} {row['median ms']:7.2f}ms {row['p95 ms']:7.2f}ms "
            f"{row['median ms'] / base:11.0f}× {row['body median ms']:10.2f}ms"
        )
    target_ms = SAVEPOINT_TARGET_SECONDS * 1000
    verdict = "MEETS" if base <= target_ms else "MISSES"
    print(f"verdict: SAVEPOINT isolation {verdict} the target of ≤ {target_ms:.0f} ms per test "
          f"(median {base:.2f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", action="append", choices=["local", "docker", "external", "tenant"],
        help="measure this backend (repeatable); default: every backend available here",
    )
    parser.add_argument("--rounds", type=int, default=200, help="simulated tests per strategy")
    args = parser.parse_args()
    backends = args.backend or available_backends()
    if not backends:
        raise SystemExit("no backend can serve here: `labkit doctor` says what is missing")
    print(f"backends: {', '.join(backends)}")
    for backend in backends:
        try:
            bench_backend(backend, args.rounds)
        finally:
            services.stop_all()


if __name__ == "__main__":
    main()
