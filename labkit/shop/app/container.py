"""The shop's live dependencies, built once per app from its settings.

`create_app` keeps one `Shop` on ``app.state.shop``; handlers get it through FastAPI
dependencies, so a test can build an app against any endpoints it likes.

`Shop.jobs` are the periodic jobs that run beside the requests while the shop serves
(the app's lifespan, or `ShopServer`, starts them): the outbox relay, its Kafka twin
where order events are streamed, and the order reconciler. Another job is one more `PeriodicJob` in the list in `from_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.data.db import create_engine_for, session_factory
from labkit.shop.domain.orders import Downstream, reconcile_orders
from labkit.shop.infra import cache as cache_module
from labkit.shop.infra.cache import Cache
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
