"""The outbox relay and an idempotent consumer of the events it delivers.

    >>> channel = relay_channel(connection)              # publisher confirms on
    >>> relay_once(sessions, channel)                    # → events published this pass
    3
    >>> consumer = OrderEventConsumer(sessions, redis_client)
    >>> consumer.handle_next(channel, "order-events")    # → "applied" | "duplicate" | None

The relay makes the outbox's promise good: every committed OutboxEvent reaches
RabbitMQ, in the order the events were created. One pass locks the oldest unpublished
rows (``FOR UPDATE SKIP LOCKED``: two relays never send the same row at the same
time), publishes each to its destination queue — persistent, with the row id as AMQP
``message_id``, confirmed by the broker — and marks them published in the same
transaction. A crash after a publish but before that commit leaves the rows
unpublished, so the next pass sends them again: delivery is *at least* once, and
consumers must be idempotent. `OrderEventConsumer` is: it records each message id
in ``processed_messages`` in the same transaction as its counter updates.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

import pika
import redis
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.data.models import AnalyticsCounter, OutboxEvent, ProcessedMessage
from labkit.shop.infra.cache import profile_key
from labkit.shop.workers.worker import add_to_counter

log = logging.getLogger(__name__)
T = TypeVar("T")

STATS_KEY = "stats:orders"
ORDER_COUNTERS = ("orders_created", "orders_revenue_cents")


def relay_channel(connection: pika.BlockingConnection) -> BlockingChannel:
    """A channel in confirm mode, as `relay_once` needs."""
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


def relay_once(
    session_factory: sessionmaker[Session], channel: BlockingChannel, batch_size: int = 100
) -> int:
    """Publish up to `batch_size` unpublished outbox events, oldest first; how many."""
    # pika keeps no public flag; without confirms a publish "succeeds" before the
    # broker has the message, and marking the row published could lose the event.
    if not getattr(channel, "_delivery_confirmation", False):
        raise ValueError(
            "relay_once needs a channel in confirm mode: use relay_channel(connection), "
            "or call channel.confirm_delivery() first"
        )
    with session_factory() as session, session.begin():
        events = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.published_at.is_(None))
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        declared: set[str] = set()
        for event in events:
            if event.destination not in declared:
                channel.queue_declare(event.destination, durable=True)
                declared.add(event.destination)
            channel.basic_publish(
                exchange="",
                routing_key=event.destination,
                body=json.dumps(event.payload).encode(),
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=str(event.id),
                    type=event.event_type,
                ),
                mandatory=True,
            )
            event.published_at = datetime.now(UTC)
    return len(events)


def unpublished_count(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return session.execute(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
        ).scalar_one()


Handled = Literal["applied", "duplicate"]


class OrderEventConsumer:
    """Keeps analytics counters and the ``stats:orders`` cache in step with order events.

    The counters live in PostgreSQL, updated in the transaction that records the
    message id: applied exactly once per event. The cache is written *after* that
    commit from the counters' committed values, so it never shows a count the
    database does not have; a failed cache write is healed by the next event. With
    several consumers a slower one may write an older snapshot last: the cache is
    eventually consistent, corrected by the next event, never ahead of the database.
    """

    name = "order-events-consumer"

    def __init__(self, session_factory: sessionmaker[Session], redis_client: redis.Redis) -> None:
        self.session_factory = session_factory
        self.redis = redis_client

    def apply(self, message_id: str, event: dict[str, Any]) -> Handled:
        """Apply one event (an ORDER_CREATED payload) unless it was applied before."""
        if event.get("eventType") != "ORDER_CREATED":
            raise ValueError(f"expected an ORDER_CREATED event, got {event.get('eventType')!r}")
        cents = int(Decimal(str(event["totalAmount"])) * 100)
        with self.session_factory() as session, session.begin():
            claimed = session.execute(
                insert(ProcessedMessage)
                .values(message_id=f"{self.name}:{message_id}", consumer=self.name)
                .on_conflict_do_nothing()
                .returning(ProcessedMessage.message_id)
            ).scalar_one_or_none()
            if claimed is None:
                return "duplicate"
            add_to_counter(session.connection(), "orders_created", 1)
            add_to_counter(session.connection(), "orders_revenue_cents", cents)
            stats = self._counters(session)
        self._refresh_cache(stats, event.get("userId"))
        return "applied"

    def handle_next(
        self, channel: BlockingChannel, queue: str, timeout: float = 1.0
    ) -> Handled | None:
        """Take one message from `queue` (waiting up to `timeout` s), apply it, then ack."""

        # Declared by consumer and relay alike: whichever comes first creates it.
        channel.queue_declare(queue, durable=True)

        def get() -> tuple[Any, Any, bytes] | None:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            return None if method is None else (method, properties, body)

        got = _poll(get, timeout)
        if got is None:
            return None
        method, properties, body = got
        if not properties.message_id:
            # Unacked, it goes back to the queue when the channel closes: nothing is lost.
            raise ValueError(
                f"message in {queue} has no message_id, so it cannot be deduplicated: "
                "publish events with relay_once, which sets it to the outbox row id"
            )
        outcome = self.apply(properties.message_id, json.loads(body))
        channel.basic_ack(method.delivery_tag)
        return outcome

    def _counters(self, session: Session) -> dict[str, int]:
        rows = session.scalars(
            select(AnalyticsCounter).where(AnalyticsCounter.name.in_(ORDER_COUNTERS))
        )
        found = {row.name: row.value for row in rows}
        return {name: found.get(name, 0) for name in ORDER_COUNTERS}

    def _refresh_cache(self, stats: dict[str, int], user_id: str | None) -> None:
        try:
            self.redis.set(STATS_KEY, json.dumps(stats))
            if user_id:
                self.redis.delete(profile_key(user_id))
        except redis.RedisError as exc:
            log.warning("stats cache not refreshed (the next event will): %s", exc)


def read_stats_cache(redis_client: redis.Redis) -> dict[str, int] | None:
    raw = redis_client.get(STATS_KEY)
    return None if raw is None else json.loads(raw)


def _poll(get: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T | None:
    """`get()`'s first answer that is not None, polling until `timeout` seconds; else None.

    Called at least once, and once more at the deadline. (The shop has its own few
    lines for this: it is a standalone app and does not import labkit's kit.)
    """
    deadline = time.monotonic() + timeout
    while (got := get()) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(interval, remaining))
    return got
