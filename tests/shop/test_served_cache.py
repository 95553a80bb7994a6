"""The served shop reads its cache on its event loop (issue #12), never stalling it.

A cache hit used to cost a trip to the thread pool and back, more than the read itself;
served (uvicorn, `ShopServer`), the shop now reads Redis with an asyncio client bound to
the serving loop (`Shop.serving`). The risk of reading on the loop is a Redis that stops
answering: a blocking read there would hold every request for ``redis_timeout``. Here
Redis freezes while a profile read waits on it, and the shop must still answer others,
then serve the read from PostgreSQL, then read its cache again once Redis is back.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from labkit.shop.app import ShopServer
from labkit.shop.testing import auth_header
from labkit.shop.testing.outages import frozen
from labkit.waiting import wait_until

# Long enough that /health answers well within it on a loaded machine, short enough
# for a test: the frozen read waits this twice (the read, then the rebuilt entry's write).
REDIS_TIMEOUT_S = 3.0


def test_a_frozen_redis_holds_only_the_reads_that_wait_on_it(make_shop_app, shop_clean, ada,
                                                             shop_settings, caplog):
    def read_failures() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "labkit.shop.infra.cache" and "cache read" in r.getMessage()]

    app = make_shop_app(redis_timeout=REDIS_TIMEOUT_S)
    token = auth_header(shop_settings, ada.id)
    path = f"/api/users/{ada.id}/profile"
    with ShopServer(app, background=False) as server, \
            httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client, \
            httpx.Client(base_url=server.url, timeout=30, trust_env=False) as waiting_client, \
            ThreadPoolExecutor(1) as pool:
        assert client.get(path, headers=token).headers["X-Cache"] == "MISS"
        assert client.get(path, headers=token).headers["X-Cache"] == "HIT"

        with frozen("redis"):
            read = pool.submit(waiting_client.get, path, headers=token)
            # uvicorn's requests in progress: the read is in the app (waiting on Redis)
            # before /health is sent, which a loop blocked on Redis could not answer.
            in_progress = server.server.server_state.tasks
            wait_until(lambda: len(in_progress) == 1, timeout=REDIS_TIMEOUT_S,
                       message="the profile read reached the served shop")
            health = client.get("/health")
            # Answered while the read still waits: before Redis's timeout ended its GET.
            assert health.status_code == 200
            assert not read_failures(), (
                "/health was answered only after the profile read's Redis GET had timed "
                f"out ({REDIS_TIMEOUT_S} s): the serving loop waited on Redis")
            answered = read.result(timeout=4 * REDIS_TIMEOUT_S + 10)

        assert (answered.status_code, answered.headers["X-Cache"]) == (200, "MISS")
        assert read_failures(), "the frozen read did not fail over to PostgreSQL"
        assert answered.json()["user"]["id"] == str(ada.id)
        again = client.get(path, headers=token)
        assert (again.status_code, again.headers["X-Cache"]) == (200, "HIT")
