"""The transactional outbox end to end: PostgreSQL → relay → RabbitMQ → consumer →
analytics counters and the Redis cache, on live services.

The seed's consistency test asks that after a commit a user "exists in all systems"
and after a partial failure "does not exist in any system". Here the systems are the
orders table, the broker, the analytics counters and the cache, and the one
transaction that writes both the order and its event is what makes that true.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pika
import pytest
import redis as redis_lib
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from labkit.services import Endpoint
from labkit.shop.data import (
    AnalyticsCounter,
    Order,
    OrderStatus,
    OutboxEvent,
    User,
    session_factory,
)
from labkit.shop.infra import profile_key, record_event
from labkit.shop.testing import add_user, migrate_once, reset_shop_data
from labkit.shop.workers import (
    OrderEventConsumer,
    read_stats_cache,
    relay_channel,
    relay_once,
    unpublished_count,
)


class Crash(BaseException):
    """Stands for the relay process dying: not an Exception, so nothing catches it."""


class SimulatedFailure(RuntimeError):
    pass


@pytest.fixture
def sessions(postgres: Endpoint, db_engine: Engine) -> sessionmaker[Session]:
    """Sessions on an empty shop database (the relay reads the whole outbox)."""
    migrate_once(postgres.url)
    reset_shop_data(db_engine)
    return session_factory(db_engine)


@pytest.fixture
def events_queue(amqp_connection: pika.BlockingConnection) -> Iterator[str]:
    """This test's destination for order events, deleted afterwards."""
    queue = f"order-events-{uuid.uuid4().hex[:8]}"
    yield queue
    amqp_connection.channel().queue_delete(queue)


@pytest.fixture
def channel(amqp_connection: pika.BlockingConnection) -> BlockingChannel:
    return relay_channel(amqp_connection)


@pytest.fixture
def consumer(sessions: sessionmaker[Session], redis_client: redis_lib.Redis) -> OrderEventConsumer:
    return OrderEventConsumer(sessions, redis_client)


@pytest.fixture
def user(sessions: sessionmaker[Session]) -> User:
    with sessions() as session:
        return add_user(session)


def place_order(
    sessions: sessionmaker[Session],
    user: User,
    destination: str,
    total: str = "109.97",
    fail_before_commit: bool = False,
    order_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A confirmed order and its ORDER_CREATED event, written in one transaction."""
    order_id = order_id or uuid.uuid4()
    with sessions() as session, session.begin():
        session.add(
            Order(
                id=order_id,
                user_id=user.id,
                status=OrderStatus.CONFIRMED.value,
                total_amount=Decimal(total),
                payment_method="CREDIT_CARD",
            )
        )
        record_event(
            session,
            aggregate="order",
            aggregate_id=order_id,
            event_type="ORDER_CREATED",
            destination=destination,
            payload={
                "eventType": "ORDER_CREATED",
                "orderId": str(order_id),
                "userId": str(user.id),
                "totalAmount": total,
            },
        )
        session.flush()  # the INSERTs reach PostgreSQL: the failure below undoes real rows
        if fail_before_commit:
            raise SimulatedFailure("Simulated failure")
    return order_id


def queued(channel: BlockingChannel, queue: str) -> list[tuple[str, dict[str, Any]]]:
    """(message_id, body) of every message waiting in `queue`, requeued afterwards."""
    seen = []
    tags = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        tags.append(method.delivery_tag)
        seen.append((properties.message_id, json.loads(body)))
    for tag in tags:
        channel.basic_nack(tag, requeue=True)
    return seen


def counters(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        rows = session.scalars(select(AnalyticsCounter))
        return {row.name: row.value for row in rows}


def outbox_ids(sessions: sessionmaker[Session], order_id: uuid.UUID) -> list[str]:
    with sessions() as session:
        rows = session.scalars(select(OutboxEvent).filter_by(aggregate_id=str(order_id)))
        return [str(row.id) for row in rows]


def assert_order_in_all_systems(
    sessions: sessionmaker[Session], redis_client: redis_lib.Redis, order_id: uuid.UUID, cents: int
) -> None:
    with sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None and order.status == OrderStatus.CONFIRMED.value
    db_counters = counters(sessions)
    assert db_counters == {"orders_created": 1, "orders_revenue_cents": cents}
    assert read_stats_cache(redis_client) == db_counters


def assert_order_in_no_system(
    sessions: sessionmaker[Session], redis_client: redis_lib.Redis, order_id: uuid.UUID
) -> None:
    with sessions() as session:
        assert session.get(Order, order_id) is None
    assert outbox_ids(sessions, order_id) == []
    assert counters(sessions) == {}
    assert read_stats_cache(redis_client) is None


def test_order_and_event_commit_together(
    sessions: sessionmaker[Session], user: User, events_queue: str
) -> None:
    order_id = place_order(sessions, user, events_queue)

    with sessions() as session:
        assert session.get(Order, order_id) is not None
        (event,) = session.scalars(select(OutboxEvent).filter_by(aggregate_id=str(order_id)))
        assert (event.event_type, event.published_at) == ("ORDER_CREATED", None)


def test_a_rolled_back_order_leaves_no_event(
    sessions: sessionmaker[Session], user: User, events_queue: str, channel: BlockingChannel
) -> None:
    with pytest.raises(SimulatedFailure):
        place_order(sessions, user, events_queue, fail_before_commit=True)

    assert unpublished_count(sessions) == 0
    assert relay_once(sessions, channel) == 0


def test_relay_publishes_exactly_the_unpublished_events_in_order(
    sessions: sessionmaker[Session], user: User, events_queue: str, channel: BlockingChannel
) -> None:
    first = place_order(sessions, user, events_queue, total="10.00")
    second = place_order(sessions, user, events_queue, total="20.00")
    assert relay_once(sessions, channel) == 2
    third = place_order(sessions, user, events_queue, total="30.00")

    assert relay_once(sessions, channel) == 1, "only the event not yet published"
    assert relay_once(sessions, channel) == 0
    assert unpublished_count(sessions) == 0
    messages = queued(channel, events_queue)
    assert [body["orderId"] for _, body in messages] == [str(first), str(second), str(third)]
    assert [message_id for message_id, _ in messages] == [
        outbox_ids(sessions, order)[0] for order in (first, second, third)
    ], "the outbox row id travels as message_id, for consumers to deduplicate on"


def test_relay_needs_publisher_confirms(
    sessions: sessionmaker[Session], amqp_channel: BlockingChannel
) -> None:
    with pytest.raises(ValueError, match="confirm mode"):
        relay_once(sessions, amqp_channel)


def test_a_locked_event_is_skipped_not_sent_twice(
    sessions: sessionmaker[Session], user: User, events_queue: str, channel: BlockingChannel
) -> None:
    place_order(sessions, user, events_queue)
    with sessions() as other_relay, other_relay.begin():
        other_relay.scalars(select(OutboxEvent).with_for_update()).all()

        assert relay_once(sessions, channel) == 0, "SKIP LOCKED: the other relay has it"

    assert relay_once(sessions, channel) == 1


class CrashesAfterPublishing:
    """The relay's channel, whose owner dies right after the `n`-th publish."""

    def __init__(self, channel: BlockingChannel, n: int) -> None:
        self._channel = channel
        self._left = n

    def basic_publish(self, *args: Any, **kwargs: Any) -> None:
        self._channel.basic_publish(*args, **kwargs)
        self._left -= 1
        if self._left == 0:
            raise Crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def test_crash_after_publish_republishes_and_the_consumer_applies_once(
    sessions: sessionmaker[Session],
    user: User,
    events_queue: str,
    channel: BlockingChannel,
    consumer: OrderEventConsumer,
    redis_client: redis_lib.Redis,
) -> None:
    for total in ("10.00", "20.00", "30.00"):
        place_order(sessions, user, events_queue, total=total)

    with pytest.raises(Crash):
        relay_once(sessions, CrashesAfterPublishing(channel, 2))  # type: ignore[arg-type]
    assert unpublished_count(sessions) == 3, "published, but never marked"
    assert relay_once(sessions, channel) == 3

    outcomes = [consumer.handle_next(channel, events_queue) for _ in range(5)]

    assert sorted(o for o in outcomes if o) == ["applied"] * 3 + ["duplicate"] * 2
    assert consumer.handle_next(channel, events_queue, timeout=0.2) is None
    assert counters(sessions) == {"orders_created": 3, "orders_revenue_cents": 6000}
    assert read_stats_cache(redis_client) == counters(sessions)


def test_after_the_events_every_system_agrees(
    sessions: sessionmaker[Session],
    user: User,
    events_queue: str,
    channel: BlockingChannel,
    consumer: OrderEventConsumer,
    redis_client: redis_lib.Redis,
) -> None:
    redis_client.set(profile_key(user.id), json.dumps({"orders": 0}))
    order_id = place_order(sessions, user, events_queue, total="109.97")

    assert relay_once(sessions, channel) == 1
    assert consumer.handle_next(channel, events_queue, timeout=3) == "applied"

    assert_order_in_all_systems(sessions, redis_client, order_id, cents=10997)
    assert redis_client.get(profile_key(user.id)) is None, "the stale profile was dropped"


def test_after_a_partial_failure_no_system_has_the_order(
    sessions: sessionmaker[Session],
    user: User,
    events_queue: str,
    channel: BlockingChannel,
    consumer: OrderEventConsumer,
    redis_client: redis_lib.Redis,
) -> None:
    order_id = uuid.uuid4()
    with pytest.raises(SimulatedFailure):
        place_order(sessions, user, events_queue, fail_before_commit=True, order_id=order_id)

    assert relay_once(sessions, channel) == 0
    assert consumer.handle_next(channel, events_queue, timeout=0.3) is None
    assert_order_in_no_system(sessions, redis_client, order_id)


def test_an_event_without_message_id_is_refused_and_kept(
    consumer: OrderEventConsumer, channel: BlockingChannel, events_queue: str
) -> None:
    channel.queue_declare(events_queue, durable=True)
    channel.basic_publish("", events_queue, b'{"eventType": "ORDER_CREATED"}')

    with pytest.raises(ValueError, match="no message_id"):
        consumer.handle_next(channel, events_queue, timeout=3)
