"""Events out of the shop: the transactional outbox and a RabbitMQ publisher.

A handler that changes data calls `record_event` in the *same* transaction, so the
event exists if and only if the change committed. After the commit it may call
`publish_now` to deliver at once (welcome emails, new-post notifications: users
expect them now). If the broker is down, the row simply stays unpublished and the
outbox relay (labkit.shop.workers.outbox), which the serving shop runs in the background,
delivers it later: the API never fails, and never loses a message, because RabbitMQ is
unavailable or frozen.

Delivery is at-least-once: a crash between publish and marking the row published
sends the event again later. Every message carries the outbox row id as AMQP
``message_id``, which consumers record in ``processed_messages`` to apply it once.

A `destination` names a durable queue; messages go through the default exchange with
the queue name as routing key, persistent (delivery_mode=2), with publisher confirms.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.data.models import OutboxEvent
from labkit.shop.settings import ShopSettings

log = logging.getLogger(__name__)


def record_event(
    session: Session,
    *,
    aggregate: str,
    aggregate_id: uuid.UUID | str,
    event_type: str,
    destination: str,
    payload: dict[str, Any],
) -> OutboxEvent:
    """Add an outbox row to the session's transaction (committed with the change)."""
    event = OutboxEvent(
        id=uuid.uuid4(),
        aggregate=aggregate,
        aggregate_id=str(aggregate_id),
        event_type=event_type,
        destination=destination,
        payload=payload,
    )
    session.add(event)
    return event


# The outbox table, for statements that write rows without ORM objects.
_OUTBOX = OutboxEvent.metadata.tables[OutboxEvent.__tablename__]
_INSERT_EVENT = insert(_OUTBOX)


def insert_events(
    session: Session | Connection,
    *,
    aggregate: str,
    aggregate_id: uuid.UUID | str,
    event_type: str,
    destinations: Iterable[str],
    payload: dict[str, Any],
) -> None:
    """`record_event` for each of `destinations`, as one INSERT run at once in the
    transaction of `session` (a Session, or a Connection); rows alike in all but their
    id and destination.

    For a hot path that never reads its events back (the order saga): no ORM object
    per row and no unit-of-work flush at commit. `record_event` stays for callers that
    use the event it returns.
    """
    rows = [
        {
            "id": uuid.uuid4(),
            "aggregate": aggregate,
            "aggregate_id": str(aggregate_id),
            "event_type": event_type,
            "destination": destination,
            "payload": payload,
        }
        for destination in destinations
    ]
    if rows:
        session.execute(_INSERT_EVENT, rows)


# What a broker that is down, frozen or unreachable raises. pika's connection workflow
# raises its own AMQPConnectorException (not an AMQPError) when the AMQP handshake times
# out, as it does against a frozen broker: missing it turned a sign-up into a 500.
BROKER_ERRORS: tuple[type[Exception], ...] = (
    pika.exceptions.AMQPError,
    AMQPConnectorException,
    OSError,
)


def heartbeat_timeout(settings: ShopSettings) -> int:
    """Whole seconds (pika's unit), at least 1: ``amqp_timeout`` rounded up."""
    return max(1, math.ceil(settings.amqp_timeout))


def amqp_parameters(settings: ShopSettings) -> pika.URLParameters:
    """Connection parameters under which no wait on the broker is unbounded.

    Connecting and the AMQP handshake are bounded by ``amqp_timeout`` (the socket and
    stack timeouts). A broker that stops answering on an open connection (frozen, or a
    network that drops packets) is noticed only by heartbeats: pika closes a connection
    that received nothing for the heartbeat timeout plus 5 s, checked that often, so a
    publish waiting for its confirm from a frozen broker gives up within 2 × (2 + 5) s
    at the default amqp_timeout, not after the broker's 60 s proposal. The broker in
    turn drops a client that sends no heartbeats for two timeouts: an idle connection
    needs `AmqpPublisher.keepalive` (or a relay pass) to stay open.
    """
    params = pika.URLParameters(settings.amqp_url)
    params.socket_timeout = settings.amqp_timeout
    params.stack_timeout = settings.amqp_timeout
    params.blocked_connection_timeout = settings.amqp_timeout
    params.heartbeat = heartbeat_timeout(settings)
    params.connection_attempts = 1
    return params


class PublishError(RuntimeError):
    """The broker could not be reached or did not confirm the message."""


class PublishSkipped(PublishError):
    """Not even tried: the connection is busy, or the broker failed a moment ago."""


class AmqpPublisher:
    """One lazily opened connection, shared by threads one at a time, reopened on failure.

    pika's BlockingConnection is not thread-safe, hence the lock; web handlers run in
    a thread pool. Publishing inline is a courtesy (users expect a welcome email now):
    the outbox relay is what guarantees delivery. So a request never queues behind a
    broker in trouble: it waits at most `turn_timeout` seconds for its turn on the
    connection, and for ``amqp_timeout`` seconds after a failure the publisher does not
    try at all (`PublishSkipped`); either way the event stays for the relay.
    """

    turn_timeout = 0.25

    def __init__(self, settings: ShopSettings) -> None:
        self.params = amqp_parameters(settings)
        self.pause_after_failure = settings.amqp_timeout
        self.keepalive_interval = heartbeat_timeout(settings) / 2
        self._lock = threading.RLock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._declared: set[str] = set()
        self._failed_at: float | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        """This thread's turn on the connection (reentrant); `PublishSkipped` if the
        broker failed within ``amqp_timeout`` seconds or the turn does not come within
        `turn_timeout` seconds. `publish_now` takes it before its database transaction,
        so a request waiting here holds no database connection."""
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < self.pause_after_failure:
            raise PublishSkipped(
                f"the broker at {self.params.host}:{self.params.port} failed "
                f"{time.monotonic() - failed_at:.1f} s ago; not retried for "
                f"{self.pause_after_failure:g} s"
            )
        if not self._lock.acquire(timeout=self.turn_timeout):
            raise PublishSkipped(
                f"the connection to {self.params.host}:{self.params.port} stayed busy for "
                f"{self.turn_timeout} s (another publish is waiting on the broker)"
            )
        try:
            yield
        finally:
            self._lock.release()

    def _open_channel(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self._drop()
            self._connection = pika.BlockingConnection(self.params)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        return self._channel

    def _drop(self) -> None:
        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.close()
            except BROKER_ERRORS:
                pass
        self._connection = self._channel = None
        self._declared.clear()

    def publish(
        self, queue: str, body: dict[str, Any], *, message_id: str, message_type: str = ""
    ) -> None:
        """Deliver `body` as JSON to the durable `queue`, confirmed by the broker."""
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id,
            type=message_type or None,
        )
        payload = json.dumps(body).encode()
        with self.turn():
            # One retry on a fresh connection if the one we had was found closed (the
            # broker restarted, or dropped it): not after a fresh connection failed,
            # nor after a heartbeat timeout, where the broker itself is not answering.
            for attempt in (1, 2):
                reused = self._channel is not None and self._channel.is_open
                try:
                    channel = self._open_channel()
                    if queue not in self._declared:
                        channel.queue_declare(queue=queue, durable=True)
                        self._declared.add(queue)
                    channel.basic_publish(
                        exchange="",
                        routing_key=queue,
                        body=payload,
                        properties=properties,
                        mandatory=True,
                    )
                    self._failed_at = None
                    return
                except BROKER_ERRORS as exc:
                    self._drop()
                    stale = reused and not isinstance(exc, pika.exceptions.AMQPHeartbeatTimeout)
                    if attempt == 2 or not stale:
                        self._failed_at = time.monotonic()
                        raise PublishError(
                            f"could not publish to queue {queue!r} at "
                            f"{self.params.host}:{self.params.port}: {exc!r}"
                        ) from exc

    def keepalive(self) -> None:
        """Answer the broker's heartbeats on an idle connection, if nobody is using it.

        Between requests nobody reads the connection, and the broker closes a client
        that misses its heartbeats; the serving shop calls this every
        `keepalive_interval` seconds (one of its background jobs), so the next publish
        finds the connection open.
        """
        if not self._lock.acquire(blocking=False):
            return  # a publish is using it, and reads the socket meanwhile
        try:
            if self._connection is not None and self._connection.is_open:
                try:
                    self._connection.process_data_events(0)
                except BROKER_ERRORS:
                    self._drop()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._drop()


# `publish_now`'s claim: one statement that locks the row and marks it published, built
# once. Through the ORM (a SELECT of the row, then a flush of its change) a publish_now
# took 4.3 ms of CPU, this way 2.0 ms (benchmarks/README.md, "Sign-up").
_CLAIM_FOR_PUBLISHING = (
    update(OutboxEvent)
    .where(
        OutboxEvent.id
        == select(OutboxEvent.id)
        .where(OutboxEvent.id == bindparam("event_id"), OutboxEvent.published_at.is_(None))
        .with_for_update(skip_locked=True)  # a relay's pass holds it: leave it to the relay
        .scalar_subquery()
    )
    .values(published_at=bindparam("published_at"))
    .returning(OutboxEvent.destination, OutboxEvent.payload, OutboxEvent.event_type)
)


def publish_now(
    factory: sessionmaker[Session], publisher: AmqpPublisher, event_id: uuid.UUID
) -> bool:
    """Publish one committed outbox event right away; False if it stays for the relay.

    The row is claimed (locked with SKIP LOCKED and marked published) in a transaction
    that commits only once the broker confirmed the message. A relay working at the
    same moment either holds the row, and we leave it to the relay without waiting, or
    skips it while we hold it and finds it published after our commit: the event is not
    sent twice by the two of them. If the publish fails, the transaction rolls back and
    the row stays for the relay. The publisher's turn is taken first: a
    request whose turn does not come, or that finds the broker failed a moment ago,
    returns at once and holds no database connection.
    """
    try:
        with publisher.turn(), factory() as session, session.begin():
            claimed = (
                session.connection()
                .execute(
                    _CLAIM_FOR_PUBLISHING,
                    {"event_id": event_id, "published_at": datetime.now(UTC)},
                )
                .first()
            )
            if claimed is None:
                return False
            publisher.publish(
                claimed.destination,
                claimed.payload,
                message_id=str(event_id),
                message_type=claimed.event_type,
            )
        return True
    except PublishSkipped as exc:
        log.info("event %s left in the outbox for the relay: %s", event_id, exc)
        return False
    except (PublishError, SQLAlchemyError) as exc:
        log.warning("event %s left in the outbox for the relay: %s", event_id, exc)
        return False
    except Exception:
        # After the commit no failure here may fail the request: the sign-up exists,
        # and a client that retried a 500 would only meet a 409. The relay sends it.
        log.exception("event %s left in the outbox for the relay (unexpected error)", event_id)
        return False
