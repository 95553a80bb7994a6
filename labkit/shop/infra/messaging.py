"""Events out of the shop: the transactional outbox and a RabbitMQ publisher.

A handler that changes data calls `record_event` in the *same* transaction, so the
event exists if and only if the change committed. After the commit it may call
`publish_now` to deliver at once (welcome emails, new-post notifications: users
expect them now). If the broker is down, the row simply stays unpublished and the
outbox relay (labkit.shop.workers.outbox) delivers it later: the API never fails, and never
loses a message, because RabbitMQ is unavailable.

Delivery is at-least-once: a crash between publish and marking the row published
sends the event again later. Every message carries the outbox row id as AMQP
``message_id``, which consumers record in ``processed_messages`` to apply it once.

A `destination` names a durable queue; messages go through the default exchange with
the queue name as routing key, persistent (delivery_mode=2), with publisher confirms.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import select
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


class PublishError(RuntimeError):
    """The broker could not be reached or did not confirm the message."""


class AmqpPublisher:
    """One lazily opened connection, shared by threads under a lock, reopened on failure.

    pika's BlockingConnection is not thread-safe, hence the lock; web handlers run in
    a thread pool.
    """

    def __init__(self, settings: ShopSettings) -> None:
        params = pika.URLParameters(settings.amqp_url)
        params.socket_timeout = settings.amqp_timeout
        params.stack_timeout = settings.amqp_timeout
        params.blocked_connection_timeout = settings.amqp_timeout
        params.connection_attempts = 1
        self.params = params
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._declared: set[str] = set()

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
            except pika.exceptions.AMQPError:
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
        with self._lock:
            # One retry on a fresh connection: an idle one may have been closed by
            # the broker (missed heartbeats) since the last publish.
            for attempt in (1, 2):
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
                    return
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self._drop()
                    if attempt == 2:
                        raise PublishError(
                            f"could not publish to queue {queue!r} at "
                            f"{self.params.host}:{self.params.port}: {exc!r}"
                        ) from exc

    def close(self) -> None:
        with self._lock:
            self._drop()


def publish_now(
    factory: sessionmaker[Session], publisher: AmqpPublisher, event_id: uuid.UUID
) -> bool:
    """Publish one committed outbox event right away; False if it stays for the relay.

    The row is locked with SKIP LOCKED, so a relay working at the same moment either
    waits for us or skips it: the event is not sent twice by the two of them.
    """
    try:
        with factory() as session, session.begin():
            event = session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.id == event_id, OutboxEvent.published_at.is_(None))
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if event is None:
                return False
            publisher.publish(
                event.destination,
                event.payload,
                message_id=str(event.id),
                message_type=event.event_type,
            )
            event.published_at = datetime.now(UTC)
        return True
    except (PublishError, SQLAlchemyError) as exc:
        log.warning("event %s left in the outbox for the relay: %s", event_id, exc)
        return False
