"""One order across four systems: PostgreSQL, its outbox, RabbitMQ and the Redis stats cache.

Lesson 09 asks every system what it knows about one order, step by step and under test:

    >>> from labkit.shop.testing.consistency import OrderSystems, new_order, order_created
    >>> systems = OrderSystems.from_services()           # the process's live services
    >>> buyer = systems.fresh_shop()                     # empty shop, one customer
    >>> with systems.events_queue() as queue:            # a queue for this demo's events
    ...     systems.views(order_id, queue)               # {"PG order": 0, "PG outbox (unsent)": 0, …}
    ...     with systems.running_pipeline(queue): ...    # relay + consumer in the background
    ...     systems.drain(queue)                         # …or in the foreground, until idle

The relay and the consumer are the shop's own (`labkit.shop.workers`); this module only
wires them to the services and reads each system's state. `CrashesAfterPublishing` is a
real crash in the middle of a relay pass: the relay's channel raises `Crash` (a
`BaseException`, as a dying process would stop everything) right after the n-th publish.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import pika
import redis
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.data import (
    AnalyticsCounter,
    Order,
    OrderStatus,
    OutboxEvent,
    User,
    session_factory,
)
from labkit.shop.testing.helpers import add_user, migrate_once, reset_shop_data
from labkit.shop.workers import (
    ORDER_COUNTERS,
    OrderEventConsumer,
    read_stats_cache,
    relay_channel,
    relay_once,
)

T = TypeVar("T")

__all__ = [
    "Crash",
    "CrashesAfterPublishing",
    "OrderSystems",
    "SimulatedFailure",
    "new_order",
    "order_created",
]


class SimulatedFailure(RuntimeError):
    """The seed's shouldSimulateFailure(): something fails after the writes, before the commit."""


class Crash(BaseException):
    """Stands for the relay process dying: no ``except Exception`` catches it."""


class CrashesAfterPublishing:
    """A relay's channel whose owner dies (raises `Crash`) right after the `n`-th publish.

    Everything else is the real channel's: the messages published before the crash are
    on the broker, confirmed, exactly as when a relay process is killed mid-pass.
    """

    def __init__(self, channel: BlockingChannel, n: int) -> None:
        self.channel, self.publishes_left = channel, n

    def basic_publish(self, *args: Any, **kwargs: Any) -> None:
        self.channel.basic_publish(*args, **kwargs)
        self.publishes_left -= 1
        if self.publishes_left == 0:
            raise Crash("the relay died after publishing")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)


def new_order(order_id: uuid.UUID, user: User, total: str) -> Order:
    """A confirmed order of `total` (a decimal string) for `user`, not yet added to a session."""
    return Order(
        id=order_id,
        user_id=user.id,
        status=OrderStatus.CONFIRMED.value,
        total_amount=Decimal(total),
        payment_method="CREDIT_CARD",
    )


def order_created(order_id: uuid.UUID, user: User, total: str) -> dict[str, str]:
    """The ORDER_CREATED event's payload, as the shop's consumer reads it."""
    return {
        "eventType": "ORDER_CREATED",
        "orderId": str(order_id),
        "userId": str(user.id),
        "totalAmount": total,
    }


@dataclass
class OrderSystems:
    """The shop's database, stats cache and broker, and what each knows about an order.

    `channel` is in confirm mode (a publish returns once the broker has the message),
    as the relay needs; `sessions` are on the migrated shop database.
    """

    engine: Engine
    sessions: sessionmaker[Session]
    cache: redis.Redis
    channel: BlockingChannel
    amqp_url: str

    @classmethod
    def from_services(cls) -> OrderSystems:
        """Connect to this process's PostgreSQL, Redis and RabbitMQ (started if needed)."""
        from labkit import services
        from labkit.sql import engine_for

        postgres, rabbitmq = services.get("postgres"), services.get("rabbitmq")
        migrate_once(postgres.url)
        engine = engine_for(postgres.url)
        cache = redis.Redis.from_url(services.get("redis").url, decode_responses=True)
        parameters = pika.URLParameters(rabbitmq.url)
        # No heartbeats: a kernel's connection sits idle while a learner reads, and pika
        # answers heartbeats only when called, so the broker would close it after ~2 min.
        parameters.heartbeat = 0
        broker = pika.BlockingConnection(parameters)
        return cls(engine, session_factory(engine), cache, relay_channel(broker), rabbitmq.url)

    def fresh_shop(self) -> User:
        """Empty the shop's tables and Redis database; add one customer and return it.

        The relay reads the whole outbox, so each demo starts from nothing and can rerun.
        """
        reset_shop_data(self.engine)
        self.cache.flushdb()
        with self.sessions() as session:
            return add_user(session)

    @contextmanager
    def events_queue(self) -> Iterator[str]:
        """A durable queue for one demo's order events, deleted after the block."""
        queue = f"order-events-{uuid.uuid4().hex[:8]}"
        self.channel.queue_declare(queue, durable=True)
        try:
            yield queue
        finally:
            self.channel.queue_delete(queue)

    def counters(self) -> dict[str, int]:
        """The analytics counters as PostgreSQL has them (committed)."""
        with self.sessions() as session:
            rows = session.scalars(
                select(AnalyticsCounter).where(AnalyticsCounter.name.in_(ORDER_COUNTERS))
            )
            found = {row.name: row.value for row in rows}
        return {name: found.get(name, 0) for name in ORDER_COUNTERS}

    def stats_cache(self) -> dict[str, int] | None:
        """The stats cache in Redis, or None when it holds nothing."""
        return read_stats_cache(self.cache)

    def ready(self, queue: str) -> int:
        """Messages waiting in `queue` (a passive declare changes nothing)."""
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def messages_about(self, queue: str, order_id: uuid.UUID) -> int:
        """How many messages waiting in `queue` name this order; each is put back."""
        seen, tags = 0, []
        while True:
            method, _, body = self.channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            tags.append(method.delivery_tag)
            seen += json.loads(body).get("orderId") == str(order_id)
        for tag in tags:
            self.channel.basic_nack(tag, requeue=True)
        # A requeue takes effect a moment after the nack: wait (briefly) until the queue
        # counts them again, so the next look at it (`ready`, a consumer) finds them.
        deadline = time.monotonic() + 2.0
        while self.ready(queue) < len(tags) and time.monotonic() < deadline:
            time.sleep(0.01)
        return seen

    def views(self, order_id: uuid.UUID, queue: str) -> dict[str, int]:
        """What each system knows about one order, right now (1 or a count; 0 is nothing)."""
        with self.sessions() as session:
            in_db = session.get(Order, order_id) is not None
            unpublished = session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(
                    OutboxEvent.aggregate_id == str(order_id),
                    OutboxEvent.published_at.is_(None),
                )
            )
        return {
            "PG order": int(in_db),
            "PG outbox (unsent)": unpublished or 0,
            "RabbitMQ queue": self.messages_about(queue, order_id),
            "PG analytics": self.counters()["orders_created"],
            "Redis stats cache": (self.stats_cache() or {}).get("orders_created", 0),
        }

    def consumer(self) -> OrderEventConsumer:
        """The shop's consumer of order events, on these systems."""
        return OrderEventConsumer(self.sessions, self.cache)

    def drain(self, queue: str) -> None:
        """Run the relay, then the consumer, until nothing is left to publish or consume.

        Absence cannot be waited for ("not yet" and "never" look the same): a test that
        asserts an order is *nowhere* drains first, so whatever was going to arrive has.
        """
        while relay_once(self.sessions, self.channel):
            pass
        consumer = self.consumer()
        while consumer.handle_next(self.channel, queue, timeout=0.2):
            pass

    def consume(self, queue: str, apply: Callable[[Session, str, dict[str, Any]], T]) -> list[T]:
        """Every message waiting in `queue`, handled as a consumer would: for each one,
        ``apply(session, message_id, event)`` in a transaction of its own, then an ack
        once that transaction has committed. Returns what `apply` returned, in order.

        A message whose `apply` raises is not acked: it goes back to the queue.
        """
        outcomes: list[T] = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=False)
            if method is None:
                return outcomes
            try:
                with self.sessions() as session, session.begin():
                    outcomes.append(apply(session, properties.message_id, json.loads(body)))
            except BaseException:
                self.channel.basic_nack(method.delivery_tag, requeue=True)
                raise
            self.channel.basic_ack(method.delivery_tag)

    @contextmanager
    def running_pipeline(self, queue: str, start_after: float = 0.0) -> Iterator[None]:
        """The relay and the consumer in a thread of their own, with their own connection,
        as the shop deploys them; stopped after the block, which re-raises what failed them.

        `start_after` (seconds) delays the start, so a test can show that it waits.
        """
        stop, failures = threading.Event(), []

        def run() -> None:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            try:
                relay, inbox = relay_channel(connection), connection.channel()
                consumer = self.consumer()
                stop.wait(start_after)
                while not stop.is_set():
                    relay_once(self.sessions, relay)
                    while consumer.handle_next(inbox, queue, timeout=0.05):
                        pass
            except Exception as exc:  # noqa: BLE001 (re-raised in the test's thread)
                failures.append(exc)
            finally:
                connection.close()

        thread = threading.Thread(target=run, name="outbox-pipeline", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
            if thread.is_alive():
                raise RuntimeError("the pipeline thread did not stop within 10 s")
            if failures:
                raise failures[0]

    def close(self) -> None:
        """Close the broker connection and the engine's pool."""
        self.channel.connection.close()
        self.engine.dispose()
