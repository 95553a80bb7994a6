"""labkit.shop.testing.consistency on live services: what lesson 09 reads from each
system, the pipeline it runs in the background or drains in the foreground, and the
relay crash it causes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from labkit.shop.data import ProcessedMessage, User
from labkit.shop.infra import record_event
from labkit.shop.testing.consistency import (
    Crash,
    CrashesAfterPublishing,
    OrderSystems,
    new_order,
    order_created,
)
from labkit.shop.workers import relay_once
from labkit.waiting import wait_until

NOTHING = {
    "PG order": 0, "PG outbox (unsent)": 0, "RabbitMQ queue": 0,
    "PG analytics": 0, "Redis stats cache": 0,
}


@pytest.fixture(scope="module")
def systems(postgres, redis, rabbitmq) -> Iterator[OrderSystems]:
    systems = OrderSystems.from_services()
    yield systems
    systems.close()


@pytest.fixture
def queue(systems: OrderSystems) -> Iterator[str]:
    with systems.events_queue() as queue:
        yield queue


@pytest.fixture
def place(systems: OrderSystems, queue: str) -> Callable[..., uuid.UUID]:
    """Places orders for the one customer of a fresh shop, through the outbox."""
    buyer = systems.fresh_shop()

    def place(total: str = "10.00") -> uuid.UUID:
        return commit_order(systems, queue, buyer, total)

    return place


def commit_order(systems: OrderSystems, queue: str, buyer: User, total: str) -> uuid.UUID:
    """An order and its event, committed together through the outbox."""
    order_id = uuid.uuid4()
    with systems.sessions() as session, session.begin():
        session.add(new_order(order_id, buyer, total))
        record_event(session, aggregate="order", aggregate_id=order_id,
                     event_type="ORDER_CREATED", destination=queue,
                     payload=order_created(order_id, buyer, total))
    return order_id


def test_an_unknown_order_is_nowhere(systems, queue, place) -> None:
    assert systems.views(uuid.uuid4(), queue) == NOTHING


def test_views_follow_one_order_through_relay_and_consumer(systems, queue, place) -> None:
    order_id = place("12.50")
    assert systems.views(order_id, queue) == {**NOTHING, "PG order": 1, "PG outbox (unsent)": 1}
    assert relay_once(systems.sessions, systems.channel) == 1
    assert systems.views(order_id, queue) == {**NOTHING, "PG order": 1, "RabbitMQ queue": 1}
    assert systems.consumer().handle_next(systems.channel, queue, timeout=3) == "applied"
    assert systems.views(order_id, queue) == {
        **NOTHING, "PG order": 1, "PG analytics": 1, "Redis stats cache": 1,
    }
    assert systems.counters() == {"orders_created": 1, "orders_revenue_cents": 1250}
    assert systems.stats_cache() == systems.counters()


def test_messages_about_puts_every_message_back(systems, queue, place) -> None:
    order_id = place()
    place()
    relay_once(systems.sessions, systems.channel)
    assert systems.messages_about(queue, order_id) == 1
    assert systems.ready(queue) == 2


def test_a_crash_mid_pass_leaves_the_published_on_the_broker(systems, queue, place) -> None:
    for _ in range(3):
        place()
    with pytest.raises(Crash):
        relay_once(systems.sessions, CrashesAfterPublishing(systems.channel, 2))
    assert systems.ready(queue) == 2
    assert relay_once(systems.sessions, systems.channel) == 3, "nothing was marked published"
    systems.drain(queue)
    assert systems.ready(queue) == 0
    assert systems.counters()["orders_created"] == 3, "the shop's consumer counts each once"


def test_consume_applies_each_message_in_its_own_transaction(systems, queue, place) -> None:
    place()
    place()
    relay_once(systems.sessions, systems.channel)

    def claim(session, message_id, event):
        session.add(ProcessedMessage(message_id=message_id, consumer="test"))
        return event["eventType"]

    assert systems.consume(queue, claim) == ["ORDER_CREATED", "ORDER_CREATED"]
    assert systems.ready(queue) == 0
    with systems.sessions() as session:
        assert session.query(ProcessedMessage).filter_by(consumer="test").count() == 2


def test_consume_puts_back_a_message_whose_handler_fails(systems, queue, place) -> None:
    place()
    relay_once(systems.sessions, systems.channel)

    def fail(session, message_id, event):
        raise ValueError("handler failed")

    with pytest.raises(ValueError):
        systems.consume(queue, fail)
    # a requeue takes effect a moment after the nack
    wait_until(lambda: systems.ready(queue) == 1, timeout=2, message="the message was not put back")


def test_running_pipeline_fills_the_cache_in_the_background(systems, queue, place) -> None:
    with systems.running_pipeline(queue):
        place("20.00")
        stats = wait_until(systems.stats_cache, timeout=5, message="the cache never filled")
    assert stats == {"orders_created": 1, "orders_revenue_cents": 2000}
