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
in ``processed_messages`` (`claim_message`) in the same transaction as its counter
updates; `IdempotentConsumer` is that pattern for any consumer.

`OutboxRelay` is `relay_once` as a background job with a connection of its own, which
the serving shop runs every ``outbox_relay_interval`` seconds: nothing has to call
`relay_once` by hand while the shop serves.

Where the shop streams order events to Kafka (``kafka_bootstrap_servers`` set), each
order event has a second outbox row whose destination is ``kafka:<topic>``. `relay_once`
leaves those rows alone; `stream_once` (run by `KafkaRelay`, beside the other relay)
produces them to the topic keyed by the order id (so one order's events stay in one
partition, in order), with the row id in a ``message_id`` header, and marks them
published once Kafka acknowledged them. The two brokers are relayed independently: a
Kafka outage delays the stream, never the RabbitMQ workflow, and the reverse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pika
import redis
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.data.models import AnalyticsCounter, OutboxEvent, ProcessedMessage
from labkit.shop.infra.cache import profile_key
from labkit.shop.infra.messaging import BROKER_ERRORS, amqp_parameters
from labkit.shop.settings import KAFKA_DESTINATION, ShopSettings
from labkit.shop.workers.background import PeriodicJob
from labkit.shop.workers.worker import add_to_counter

if TYPE_CHECKING:
    from confluent_kafka import Producer

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
            .where(
                OutboxEvent.published_at.is_(None),
                ~OutboxEvent.destination.startswith(KAFKA_DESTINATION),
            )
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


class OutboxRelay:
    """The relay as a background job: `relay_once` on a connection of its own.

    The serving shop runs `run_pass` every ``outbox_relay_interval`` seconds (see
    `labkit.shop.workers.background`). A pass publishes what is waiting, a batch per
    transaction, up to `max_batches` batches (so a backlog after an outage drains
    over a few passes without holding up a stop). A broker error drops the connection
    and propagates; the next pass opens a new one, so the relay reconnects by itself.
    A database error propagates too, and leaves the connection open: rows not marked
    published stay for the next pass. Several relays (one per shop worker) may run at
    once: `relay_once` locks its rows with SKIP LOCKED, so no row is sent by two.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        connection_params: pika.connection.Parameters,
        batch_size: int = 100,
        max_batches: int = 10,
    ) -> None:
        self.session_factory = session_factory
        self.connection_params = connection_params
        self.batch_size = batch_size
        self.max_batches = max_batches
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    @classmethod
    def from_settings(
        cls, settings: ShopSettings, session_factory: sessionmaker[Session]
    ) -> OutboxRelay:
        return cls(
            session_factory,
            amqp_parameters(settings),
            batch_size=settings.outbox_relay_batch_size,
        )

    def run_pass(self) -> int:
        """Publish the waiting events, oldest first; how many were published."""
        published = 0
        try:
            channel = self._open()
            for _ in range(self.max_batches):
                sent = relay_once(self.session_factory, channel, self.batch_size)
                published += sent
                if sent < self.batch_size:
                    break
            assert self._connection is not None
            # Between passes nobody reads the socket: answering the broker's heartbeats
            # here keeps an idle relay's connection, and notices a dead broker.
            self._connection.process_data_events(0)
        except BROKER_ERRORS:
            self.close()
            raise
        return published

    def close(self) -> None:
        """Close the connection (the next pass opens another)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(*BROKER_ERRORS):
                connection.close()

    def job(self, interval: float) -> PeriodicJob:
        """This relay as a `PeriodicJob` for `BackgroundJobs`."""
        return PeriodicJob("outbox-relay", interval, self.run_pass, self.close)

    def _open(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = pika.BlockingConnection(self.connection_params)
            self._channel = relay_channel(self._connection)
        return self._channel


class StreamError(RuntimeError):
    """Kafka did not acknowledge outbox events in time: they stay for the next pass."""


def stream_once(
    session_factory: sessionmaker[Session],
    producer: Producer,
    batch_size: int = 100,
    timeout: float = 5.0,
) -> int:
    """Produce up to `batch_size` unpublished Kafka-bound outbox events, oldest first; how many.

    Each goes to the topic its destination names, keyed by its aggregate id (the order
    id), with the row id as ``message_id`` header and the event type as ``type``. The
    rows are marked published only when Kafka acknowledged every one of them (waiting
    at most `timeout` seconds): else StreamError, and the transaction, with its locks,
    rolls back, so the next pass sends them again (at least once: dedupe on message_id).
    """
    with session_factory() as session, session.begin():
        events = session.scalars(
            select(OutboxEvent)
            .where(
                OutboxEvent.published_at.is_(None),
                OutboxEvent.destination.startswith(KAFKA_DESTINATION),
            )
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        if not events:
            return 0
        errors: list[Any] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(error)

        for event in events:
            producer.produce(
                event.destination.removeprefix(KAFKA_DESTINATION),
                key=event.aggregate_id,
                value=json.dumps(event.payload).encode(),
                headers={"message_id": str(event.id), "type": event.event_type},
                on_delivery=delivered,
            )
        waiting = producer.flush(timeout)
        if errors or waiting:
            raise StreamError(
                f"{len(errors) + waiting} of {len(events)} order event(s) not acknowledged by "
                f"Kafka within {timeout}s ({errors[0] if errors else 'no answer'}); they stay "
                "in the outbox for the next pass"
            )
        published = datetime.now(UTC)
        for event in events:
            event.published_at = published
    return len(events)


class KafkaRelay:
    """`stream_once` as a background job, with a producer of its own (made on first use).

    The producer is idempotent (no duplicates or reordering from its own retries) and
    gives up on a message after ``kafka_timeout`` seconds, so a pass against a broker
    that is down ends with a StreamError, and the job's backoff retries it.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        config: dict[str, Any],
        timeout: float,
        batch_size: int = 100,
        max_batches: int = 10,
    ) -> None:
        self.session_factory = session_factory
        self.config = config
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_batches = max_batches
        self._producer: Producer | None = None

    @classmethod
    def from_settings(
        cls, settings: ShopSettings, session_factory: sessionmaker[Session]
    ) -> KafkaRelay:
        config = {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "enable.idempotence": True,
            "message.timeout.ms": int(settings.kafka_timeout * 1000),
            "logger": log,
        }
        return cls(session_factory, config, settings.kafka_timeout,
                   batch_size=settings.outbox_relay_batch_size)

    def run_pass(self) -> int:
        """Stream the waiting order events, oldest first; how many were acknowledged."""
        producer = self._open()
        streamed = 0
        for _ in range(self.max_batches):
            # a little beyond the producer's own timeout: its failures are reported first
            sent = stream_once(self.session_factory, producer, self.batch_size, self.timeout + 1)
            streamed += sent
            if sent < self.batch_size:
                break
        return streamed

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    def job(self, interval: float) -> PeriodicJob:
        """This relay as a `PeriodicJob` for `BackgroundJobs`."""
        return PeriodicJob("kafka-relay", interval, self.run_pass, self.close)

    def _open(self) -> Producer:
        if self._producer is None:
            try:
                from confluent_kafka import Producer
            except ImportError:
                raise RuntimeError(
                    "the shop streams order events to Kafka (LABKIT_SHOP_KAFKA_BOOTSTRAP_SERVERS "
                    "is set) but confluent-kafka is not installed: pip install 'labkit[kafka]'"
                ) from None
            self._producer = Producer(self.config)
        return self._producer


Handled = Literal["applied", "duplicate"]


def claim_message(session: Session, consumer: str, message_id: str) -> bool:
    """Record that `consumer` applies `message_id`, in `session`'s transaction; False
    if it was recorded before (a redelivery: apply nothing).

    Concurrent deliveries of one message wait on each other here (the unique key), so
    only one of them applies it, whatever the number of consumers.
    """
    claimed = session.execute(
        insert(ProcessedMessage)
        .values(message_id=f"{consumer}:{message_id}", consumer=consumer)
        .on_conflict_do_nothing()
        .returning(ProcessedMessage.message_id)
    ).scalar_one_or_none()
    return claimed is not None


class IdempotentConsumer:
    """A consumer of relayed events that applies each message id once.

    Subclasses name themselves (`name`, the ``consumer`` in ``processed_messages``)
    and implement `apply`, which calls `claim_message` in the transaction that makes
    the message's effect.
    """

    name = "consumer"

    def apply(self, message_id: str, event: dict[str, Any]) -> Handled:
        raise NotImplementedError

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


class OrderEventConsumer(IdempotentConsumer):
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
            if not claim_message(session, self.name, message_id):
                return "duplicate"
            add_to_counter(session.connection(), "orders_created", 1)
            add_to_counter(session.connection(), "orders_revenue_cents", cents)
            stats = self._counters(session)
        self._refresh_cache(stats, event.get("userId"))
        return "applied"

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
