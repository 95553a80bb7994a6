"""What a tenant costs next to a private server set: time to create and drop, memory.

    python benchmarks/tenants.py              # ~1 min; --rounds N creates/drops per service

Printed, never asserted; the targets from issue #10 are printed beside the figures:

- create and drop of a tenant per service, medians and 90th percentiles over
  `--rounds` (targets: ≤ 50 ms for a PostgreSQL database from a template, ≤ 100 ms for
  a RabbitMQ vhost). Every create includes its own connection to the server, as a
  kernel's would; the first tenant (which makes the template and checks admin rights)
  is not counted;
- memory: what the private servers a process starts today (PostgreSQL, Redis, RabbitMQ
  on the local backend) take idle, against what one tenant adds to such servers,
  idle and with one open connection per service (a kernel that used them). Memory is
  the servers' process trees' RSS and USS (pages no other process shares): RSS counts
  PostgreSQL's shared buffers in every backend, USS does not, so the truth for
  PostgreSQL is nearer USS. PostgreSQL's disk per tenant database is printed too.

The servers are labkit's own (started here, stopped at the end), so no other work's
traffic lands in the figures; the machine's load still does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import psutil
import psycopg

from labkit import services

SERVICES = ("postgres", "redis", "rabbitmq")
TARGETS = {"postgres": 50.0, "rabbitmq": 100.0}


def memory(handle: object) -> tuple[float, float]:
    """(RSS, USS) in MB of a local server's whole process tree."""
    record = handle.record  # type: ignore[attr-defined]  # a LocalHandle
    rss = uss = 0
    for proc in services.processes_of(record):
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        uss += info.uss
    return rss / 1e6, uss / 1e6


def quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(ordered):6.1f} ms, p90 {p90:6.1f} ms"


def time_ms(action: Callable[[], object]) -> tuple[float, object]:
    began = time.perf_counter()
    result = action()
    return (time.perf_counter() - began) * 1000, result


def connect_all(tenant: services.Tenant) -> list[Callable[[], None]]:
    """One open connection per service, as a kernel that used the tenant holds; closers."""
    import pika
    import redis

    pg = tenant["postgres"]
    conn = psycopg.connect(host=pg.host, port=pg.port, user=pg.username, password=pg.password,
                           dbname=pg.database, autocommit=True)
    conn.execute("select 1")
    client = redis.Redis.from_url(tenant["redis"].url)
    client.set(tenant["redis"].extra["key_prefix"] + "hello", "x")
    amqp = pika.BlockingConnection(pika.URLParameters(tenant["rabbitmq"].url))
    amqp.channel().queue_declare("jobs")
    return [conn.close, client.close, amqp.close]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="creates/drops per service")
    parser.add_argument("--tenants", type=int, default=10, help="tenants for the memory figure")
    args = parser.parse_args()
    os.environ.setdefault("LABKIT_STATE_DIR", tempfile.mkdtemp(prefix="labkit-bench-state-"))
    os.environ["LABKIT_RABBITMQ_MANAGEMENT"] = "1"  # tenants' vhosts are made through it

    print(f"labkit tenants, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; private servers on the local backend")
    handles = {name: services.start(name, "local") for name in SERVICES}
    try:
        idle = {name: memory(handle) for name, handle in handles.items()}
        admin = services.TenantAdmin(
            postgres=handles["postgres"].endpoint.dsn,
            redis=handles["redis"].endpoint.url,
            rabbitmq=handles["rabbitmq"].endpoint.extra["management_url"],
        )
        services.create_tenant(admin).drop()  # the template, and the rights checked once

        print(f"\ncreate and drop, {args.rounds} rounds per service:")
        for name in SERVICES:
            creates, drops = [], []
            for _ in range(args.rounds):
                ms, tenant = time_ms(lambda name=name: services.create_tenant(admin, services=(name,)))
                creates.append(ms)
                drops.append(time_ms(tenant.drop)[0])  # type: ignore[attr-defined]
            target = TARGETS.get(name)
            verdict = (f"   (target ≤ {target:.0f} ms: "
                       f"{'met' if statistics.median(creates) <= target else 'missed'})"
                       if target else "")
            print(f"  {name:<9} create {quantiles(creates)}{verdict}")
            print(f"  {'':<9} drop   {quantiles(drops)}")

        tenants = [services.create_tenant(admin) for _ in range(args.tenants)]
        made = {name: memory(handle) for name, handle in handles.items()}
        closers = [close for tenant in tenants for close in connect_all(tenant)]
        time.sleep(1)  # let the servers settle the new connections' memory
        used = {name: memory(handle) for name, handle in handles.items()}
        with psycopg.connect(admin.postgres or "", autocommit=True) as conn:
            disk = conn.execute("select pg_database_size(%s)", (tenants[0].name,)).fetchone()
        for close in closers:
            close()
        for tenant in tenants:
            tenant.drop()

        print(f"\nmemory (MB): a private server set idle, against what one tenant adds "
              f"(average of {args.tenants}):")
        print(f"  {'service':<9} {'private RSS':>11} {'USS':>7}   {'tenant idle RSS':>15} "
              f"{'USS':>6}   {'+1 connection RSS':>17} {'USS':>6}")
        totals = [0.0] * 6
        for name in SERVICES:
            row = [idle[name][0], idle[name][1],
                   (made[name][0] - idle[name][0]) / args.tenants,
                   (made[name][1] - idle[name][1]) / args.tenants,
                   (used[name][0] - idle[name][0]) / args.tenants,
                   (used[name][1] - idle[name][1]) / args.tenants]
            totals = [t + r for t, r in zip(totals, row, strict=True)]
            print(f"  {name:<9} {row[0]:11.1f} {row[1]:7.1f}   {row[2]:15.2f} {row[3]:6.2f}   "
                  f"{row[4]:17.2f} {row[5]:6.2f}")
        print(f"  {'all':<9} {totals[0]:11.1f} {totals[1]:7.1f}   {totals[2]:15.2f} "
              f"{totals[3]:6.2f}   {totals[4]:17.2f} {totals[5]:6.2f}")
        if disk:
            print(f"  PostgreSQL disk per tenant database (copy of the empty template): "
                  f"{disk[0] / 1e6:.1f} MB")
        growth = {name: (used[name][1] - idle[name][1]) / args.tenants for name in SERVICES}
        noise = [name for name, megabytes in growth.items() if megabytes < 0]
        if noise:
            print(f"  {', '.join(noise)}: shrank while tenants were added (the runtime's garbage "
                  "collection), so its per-tenant cost is below this measure's noise: counted 0")
        used_uss = max(sum(max(megabytes, 0.0) for megabytes in growth.values()), 0.01)
        print(f"  a used tenant costs ~{used_uss:.1f} MB USS against {totals[1]:.0f} MB USS for "
              f"a private set: ~{totals[1] / used_uss:.0f}x less")
    finally:
        for handle in handles.values():
            handle.stop()


if __name__ == "__main__":
    main()
