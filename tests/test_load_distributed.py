"""Locust distributed — a master and two workers, on loopback — against the shop.

Each worker makes its own share of the load; their rows reach the master only through
Locust's own channel (the workers' stats reports), as they would from other machines.
The merged table is held to the shop's own count of what it served, and to the
percentiles Locust computed from the same requests.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from labkit import load
from labkit.shop.testing import auth_header, shop_env, shop_with_users

USERS = 20


def locust_percentile(latency_ms: np.ndarray, q: float) -> float:
    """A percentile as Locust reports it: on latencies rounded as Locust stores them (to
    1 ms under 100 ms, 10 ms under 1 s, 100 ms beyond), the one at rank int(n·q)."""
    rounded = np.sort(np.where(latency_ms < 100, np.round(latency_ms),
                               np.where(latency_ms < 1000, np.round(latency_ms, -1),
                                        np.round(latency_ms, -2))))
    return float(rounded[min(int(len(rounded) * q), len(rounded) - 1)])


@pytest.fixture(scope="module")
def shop_serving_users(postgres, redis):
    settings, ids = shop_with_users(USERS)
    with load.serve_app("labkit.shop.testing:shop", factory=True, env=shop_env(settings),
                        ready_path="/health", access_log=True) as shop:
        yield shop, [f"/api/users/{user}/profile" for user in ids], auth_header(settings, ids[0])


@pytest.mark.slow
def test_a_master_and_two_workers_bring_back_every_request_the_shop_served(
    shop_serving_users, tmp_path
):
    shop, paths, token = shop_serving_users
    served_before = shop.access_count()

    with warnings.catch_warnings():  # how busy this machine is is not the question here
        warnings.simplefilter("ignore", load.GeneratorBottleneckWarning)
        run = load.run_locust(shop.url, paths, users=4, duration_s=4, headers=token,
                              workers=2, app_pid=shop.pid, csv_dir=tmp_path)

    served = shop.access_count() - served_before
    # One file of rows, the master's: on other machines, a worker's own file would be lost.
    assert len(list(tmp_path.glob("requests.*.csv"))) == 1
    rows = run.requests
    assert run.requests.attrs["workers"] == 2
    assert len(rows) > 0 and (rows["status"] == 200).all(), rows["error"].value_counts()
    # Every request the shop answered came back from one worker or the other, once.
    assert len(rows) == served, f"the shop served {served} requests, the run has {len(rows)} rows"
    aggregated = run.stats.set_index("Name").loc["Aggregated"]
    assert aggregated["Request Count"] == len(rows)
    # Locust merged the workers' histograms; the same requests' rows give its percentiles.
    latency = rows["latency_ms"].to_numpy()
    for column, q in {"50%": 0.50, "90%": 0.90, "99%": 0.99}.items():
        ours = locust_percentile(latency, q)
        assert ours == pytest.approx(float(aggregated[column]), abs=1.0), (
            f"p{q * 100:g}: Locust says {aggregated[column]} ms, its rows {ours} ms")
