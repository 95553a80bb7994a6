"""The shop's live dependencies, built once per app from its settings.

`create_app` keeps one `Shop` on ``app.state.shop``; handlers get it through FastAPI
dependencies, so a test can build an app against any endpoints it likes.

`Shop.serving()` is what serving adds on the serving event loop (the app's lifespan,
or `ShopServer`, enters it): an asyncio Redis client for cache reads on that loop.

`Shop.jobs` are the periodic jobs that run beside the requests while the shop serves
(the app's lifespan, or `ShopServer`, starts them): the outbox relay, its Kafka twin
where order events are streamed, and the order reconciler. Another job is one more `PeriodicJob` in the list in `from_settings`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from labkit.shop.data.db import create_engine_for, session_factory
from labkit.shop.domain.orders import Downstream, reconcile_orders
from labkit.shop.infra import cache as cache_module
from labkit.shop.infra.cache import Cache, LoopCache
from labkit.shop.infra.login_limit import LoginLimit
from labkit.shop.infra.messaging import AmqpPublisher
from labkit.shop.settings import ShopSettings
from labkit.shop.workers.background import BackgroundJobs, PeriodicJob
from labkit.shop.workers.outbox import KafkaRelay, OutboxRelay


@dataclass
class Shop:
    settings: ShopSettings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    cache: Cache
    login_limit: LoginLimit
    publisher: AmqpPublisher
    downstream: Downstream
    jobs: BackgroundJobs
    # bound by `serving` to the loop that serves: (that loop, its cache reader)
    _loop_cache: tuple[asyncio.AbstractEventLoop, LoopCache] | None = field(
        default=None, init=False, repr=False
    )

    @classmethod
    def from_settings(cls, settings: ShopSettings) -> Shop:
        # Nothing here connects yet: engines, Redis clients and the publisher all
        # connect on first use, so building an app never fails on a down dependency.
        engine = create_engine_for(settings)
        client = cache_module.connect(settings)
        sessions = session_factory(engine)
        # One PeriodicJob per line; each runs on its own thread while the shop serves,
        # and one whose interval is 0 is off.
        publisher = AmqpPublisher(settings)
        downstream = Downstream(settings)
        jobs = BackgroundJobs(
            [
                OutboxRelay.from_settings(settings, sessions).job(settings.outbox_relay_interval),
                # order events to Kafka, where the shop streams them (off by default)
                KafkaRelay.from_settings(settings, sessions).job(
                    settings.outbox_relay_interval if settings.kafka_bootstrap_servers else 0
                ),
                PeriodicJob("amqp-keepalive", publisher.keepalive_interval, publisher.keepalive),
                PeriodicJob(
                    "order-reconciler",
                    settings.order_reconcile_every_seconds,
                    lambda: reconcile_orders(sessions, downstream, settings),
                ),
            ],
            max_backoff=settings.background_max_backoff,
        )
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            redis=client,
            cache=Cache(client, settings),
            login_limit=LoginLimit(client, settings),
            publisher=publisher,
            downstream=downstream,
            jobs=jobs,
        )

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """While the shop serves on the running event loop: cache reads on that loop.

        One loop per shop is bound: a second server of the same app at the same time
        reads through the thread pool, as an unserved app does."""
        if self._loop_cache is not None:
            yield
            return
        reader = LoopCache(self.settings)
        self._loop_cache = (asyncio.get_running_loop(), reader)
        try:
            yield
        finally:
            self._loop_cache = None
            await reader.aclose()

    async def cached_json(self, key: str) -> Any | None:
        """`Cache.get_json` from a coroutine: on the serving loop without leaving it,
        elsewhere on the thread pool (the blocking client must not stall a loop)."""
        bound = self._loop_cache
        if bound is not None and bound[0] is asyncio.get_running_loop():
            return await bound[1].get_json(key)
        return await run_in_threadpool(self.cache.get_json, key)

    def reconcile_orders(self) -> dict[str, int]:
        """Complete orders stuck PENDING after an outage (`labkit.shop.domain.orders`):
        the periodic job for the serving shop, every ``order_reconcile_every_seconds``."""
        return reconcile_orders(self.sessions, self.downstream, self.settings)

    def close(self) -> None:
        """Stop the background jobs, then close every client (the jobs use some)."""
        self.jobs.stop()
        self.downstream.close()
        self.publisher.close()
        self.redis.close()
        self.engine.dispose()
