"""Fault layer benchmark: what a labkit.faults proxy adds to each round trip, on loopback.

    .venv/bin/python benchmarks/faults.py [--rounds 5000]

On this process's Redis (LABKIT_BACKEND as usual) it times PING round trips, one at a
time, three ways, interleaved in blocks so that the machine's load hits all alike:

1. straight to Redis;
2. through a `labkit.faults.Proxy` with no fault on;
3. through the same proxy with a 0 ms latency fault on (the fault path, no delay).

It prints the median and p99 of each, the proxy's added time per round trip (the
difference of the medians, and of the p99s), and the verdict against the target: added median ≤ 0.2 ms. The
verdict is printed, never asserted: timings belong to the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import redis as redis_lib

from labkit import services
from labkit.faults import Proxy

TARGET_ADDED_MEDIAN_S = 0.0002
BLOCK = 100  # round trips per block; blocks alternate between the ways measured


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def round_trips(client: redis_lib.Redis, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5000, help="round trips per way")
    args = parser.parse_args()

    endpoint = services.get("redis")
    with Proxy(endpoint.host, endpoint.port, name="redis") as proxy:
        clients = {
            "direct": redis_lib.Redis.from_url(endpoint.url),
            "proxy": redis_lib.Redis.from_url(proxy.url_for(endpoint.url)),
        }
        times: dict[str, list[float]] = {"direct": [], "proxy": [], "proxy, 0 ms latency": []}
        for client in clients.values():
            round_trips(client, 200)  # connected and warm
        while len(times["direct"]) < args.rounds:
            times["direct"] += round_trips(clients["direct"], BLOCK)
            times["proxy"] += round_trips(clients["proxy"], BLOCK)
            with proxy.latency(0, direction="both"):
                times["proxy, 0 ms latency"] += round_trips(clients["proxy"], BLOCK)
        for client in clients.values():
            client.close()

    load = os.getloadavg()[0]
    print(f"Redis PING round trips on loopback ({endpoint.backend} backend), "
          f"{args.rounds} each, load average {load:.1f}:")
    for way, values in times.items():
        print(f"  {way:<22} median {statistics.median(values) * 1e3:.3f} ms   "
              f"p99 {percentile(values, 0.99) * 1e3:.3f} ms")
    direct_median = statistics.median(times["direct"])
    for way in ("proxy", "proxy, 0 ms latency"):
        added_median = statistics.median(times[way]) - direct_median
        added_p99 = percentile(times[way], 0.99) - percentile(times["direct"], 0.99)
        print(f"added by the {way:<20} median {added_median * 1e3:.3f} ms   "
              f"p99 {added_p99 * 1e3:.3f} ms")
    added = statistics.median(times["proxy"]) - direct_median
    verdict = "meets" if added <= TARGET_ADDED_MEDIAN_S else "misses"
    print(f"verdict: the proxy's added median {added * 1e3:.3f} ms {verdict} the "
          f"≤ {TARGET_ADDED_MEDIAN_S * 1e3:.1f} ms target")


if __name__ == "__main__":
    main()
