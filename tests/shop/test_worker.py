"""The order worker on live RabbitMQ and PostgreSQL.

Each test has its own queues (and the worker its own connection); database effects
are checked as deltas of the counters and by the test's own order ids, so tests do
not depend on each other or on their order.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import BasicProperties
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from labkit.services import Endpoint
from labkit.shop.data import AnalyticsCounter, ProcessedMessage, session_factory
from labkit.shop.testing import migrate_once, queued_json
from labkit.shop.workers import (
    OrderMessage,
    OrderTopology,
    OrderWorker,
    TopologyConflict,
    declare_topology,
    record_order,
)
from labkit.waiting import wait_until


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


@pytest.fixture
def sessions(postgres: Endpoint, db_engine: Engine) -> sessionmaker[Session]:
    migrate_once(postgres.url)
    return session_factory(db_engine)


@pytest.fixture
def topology(amqp_connection: pika.BlockingConnection) -> Iterator[OrderTopology]:
    suffix = uuid.uuid4().hex[:8]
    names = OrderTopology(
        orders=f"orders-{suffix}",
        notifications=f"notifications-{suffix}",
        max_attempts=3,
        retry_delay_ms=20,
    )
    yield names
    channel = amqp_connection.channel()
    for queue in (names.orders, names.retry, names.dead, names.notifications):
        channel.queue_delete(queue)


@pytest.fixture
def make_worker(
    rabbitmq: Endpoint, sessions: sessionmaker[Session], topology: OrderTopology
) -> Iterator[Callable[..., OrderWorker]]:
    """Workers on the test's queues, each with its own connection, closed after the test."""
    workers: list[OrderWorker] = []

    def make(worker_class: type[OrderWorker] = OrderWorker, **options: Any) -> OrderWorker:
        worker = worker_class(pika.URLParameters(rabbitmq.url), sessions, topology, **options)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.close()


@pytest.fixture
def channel(amqp_channel: BlockingChannel, topology: OrderTopology) -> BlockingChannel:
    """The test's channel, with the worker's queues declared (as a worker would)."""
    declare_topology(amqp_channel, topology)
    return amqp_channel


def an_order(**overrides: Any) -> dict[str, Any]:
    return {
        "order_id": f"order-{uuid.uuid4().hex[:10]}",
        "user_id": "user-456",
        "items": [{"product_id": "prod-1", "quantity": 2}],
        "total": 59.98,
        **overrides,
    }


def publish(channel: BlockingChannel, queue: str, body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    channel.basic_publish(
        "", queue, raw, pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    )


def counter(sessions: sessionmaker[Session], name: str) -> int:
    with sessions() as session:
        row = session.get(AnalyticsCounter, name)
        return row.value if row else 0


def is_recorded(sessions: sessionmaker[Session], order_id: str) -> bool:
    with sessions() as session:
        key = f"order-worker:{order_id}"
        return session.scalar(select(ProcessedMessage).filter_by(message_id=key)) is not None


def depth(channel: BlockingChannel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def next_raw(channel: BlockingChannel, queue: str) -> tuple[BasicProperties, bytes]:
    def get() -> tuple[BasicProperties, bytes] | None:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        return None if method is None else (properties, body)

    return wait_until(get, timeout=3, message=f"a message in {queue}")


def test_order_workflow(
    channel: BlockingChannel,
    make_worker: Callable[..., OrderWorker],
    topology: OrderTopology,
    sessions: sessionmaker[Session],
) -> None:
    """The seed's test: publish an order, process it, a confirmation is sent."""
    orders_before = counter(sessions, "orders_processed")
    revenue_before = counter(sessions, "revenue_cents")
    order = an_order()
    publish(channel, topology.orders, order)

    result = make_worker().process_one(timeout=3)

    assert result is not None
    assert (result.status, result.order_id, result.attempt) == ("processed", order["order_id"], 1)
    assert queued_json(channel, topology.notifications) == [
        {"type": "order_confirmation", "order_id": order["order_id"]}
    ]
    assert is_recorded(sessions, order["order_id"])
    assert counter(sessions, "orders_processed") == orders_before + 1
    assert counter(sessions, "revenue_cents") == revenue_before + 5998
    assert depth(channel, topology.orders) == 0, "acked, so gone from the queue"


def test_no_message_means_no_result(make_worker: Callable[..., OrderWorker]) -> None:
    assert make_worker().process_one(timeout=0.2) is None


def test_crash_before_ack_means_redelivery(
    channel: BlockingChannel,
    make_worker: Callable[..., OrderWorker],
    topology: OrderTopology,
    sessions: sessionmaker[Session],
) -> None:
    def write_then_crash(session: Session, order: OrderMessage) -> bool:
        record_order(session, order)
        raise Crash

    order = an_order()
    publish(channel, topology.orders, order)
    crashing = make_worker(apply=write_then_crash)
    with pytest.raises(Crash):
        crashing.process_one(timeout=3)
    crashing.close()  # the dead process's connection drops; the broker takes the message back

    assert not is_recorded(sessions, order["order_id"]), "the transaction rolled back"
    result = make_worker().process_one(timeout=3)
    assert result is not None and result.status == "processed"
    assert is_recorded(sessions, order["order_id"])


def test_auto_ack_loses_the_message_in_a_crash(
    rabbitmq: Endpoint,
    channel: BlockingChannel,
    make_worker: Callable[..., OrderWorker],
    topology: OrderTopology,
) -> None:
    """The contrast: with auto_ack the broker forgets a message as soon as it sends it."""
    publish(channel, topology.orders, an_order())
    careless = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    deliveries = careless.channel().consume(topology.orders, auto_ack=True, inactivity_timeout=3)
    method, _, _ = next(deliveries)
    assert method is not None
    careless.close()  # the consumer dies before doing the work

    assert depth(channel, topology.orders) == 0
    assert make_worker().process_one(timeout=0.3) is None, "the order is gone for good"


def test_crash_after_commit_does_not_count_twice(
    channel: BlockingChannel,
    make_worker: Callable[..., OrderWorker],
    topology: OrderTopology,
    sessions: sessionmaker[Session],
) -> None:
    class CrashesBeforeNotifying(OrderWorker):
        def _notify(self, order: OrderMessage) -> None:
            raise Crash

    orders_before = counter(sessions, "orders_processed")
    order = an_order()
    publish(channel, topology.orders, order)
    crashing = make_worker(CrashesBeforeNotifying)
    with pytest.raises(Crash):
        crashing.process_one(timeout=3)
    crashing.close()
    assert is_recorded(sessions, order["order_id"]), "committed before the crash"

    result = make_worker().process_one(timeout=3)

    assert result is not None and result.status == "duplicate"
    assert counter(sessions, "orders_processed") == orders_before + 1
    assert queued_json(channel, topology.notifications) == [
        {"type": "order_confirmation", "order_id": order["order_id"]}
    ], "the redelivery still sends the confirmation the crash prevented"


def test_duplicate_delivery_is_applied_once(
    channel: BlockingChannel,
    make_worker: Callable[..., OrderWorker],
    topology: OrderTopology,
    sessions: sessionmaker[Session],
) -> None:
    orders_before = counter(sessions, "orders_processed")
    order = an_order()
    publish(channel, topology.orders, order)
    publish(channel, topology.orders, order)  # a producer that retried its publish
    worker = make_worker()

    statuses = [worker.process_one(timeout=3).status for _ in range(2)]  # type: ignore[union-attr]

    assert statuses == ["processed", "duplicate"]
    assert counter(sessions, "orders_processed") == orders_before + 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "expected a JSON object"),
        ({"order_id": "order-1", "user_id": "u"}, "items: Field required"),
        (an_order(total=-1), "total: Input should be greater than or equal to 0"),
    ],
    ids=["bad-json", "missing-items", "negative-total"],
)
def test_malformed_message_is_dead_lettered_at_once(
    channel: BlockingChannel,
    make_worker: Callable[..., OrderWorker],
    topology: OrderTopology,
    body: Any,
    problem: str,
) -> None:
    publish(channel, topology.orders, body)

    result = make_worker().process_one(timeout=3)

    assert result is not None and (result.status, result.attempt) == ("dead-lettered", 1)
    properties, dead_body = next_raw(channel, topology.dead)
    assert problem in properties.headers["x-error"]
    assert dead_body == (body if isinstance(body, bytes) else json.dumps(body).encode())
    assert depth(channel, topology.orders) == 0


def test_failing_handler_is_retried_then_dead_lettered(
    channel: BlockingChannel,
    make_worker: Callable[..., OrderWorker],
    topology: OrderTopology,
    sessions: sessionmaker[Session],
) -> None:
    def always_fails(session: Session, order: OrderMessage) -> bool:
        raise RuntimeError("warehouse table locked")

    order = an_order()
    publish(channel, topology.orders, order)
    worker = make_worker(apply=always_fails)

    results = [worker.process_one(timeout=3) for _ in range(3)]

    assert [(r.status, r.attempt) for r in results if r] == [
        ("retrying", 1),
        ("retrying", 2),
        ("dead-lettered", 3),
    ]
    properties, body = next_raw(channel, topology.dead)
    assert json.loads(body) == order
    assert properties.headers["x-attempts"] == 3
    assert "warehouse table locked" in properties.headers["x-error"]
    assert worker.process_one(timeout=0.3) is None, "no fourth attempt"
    assert not is_recorded(sessions, order["order_id"])


def test_a_transient_failure_is_retried_and_then_succeeds(
    channel: BlockingChannel,
    make_worker: Callable[..., OrderWorker],
    topology: OrderTopology,
    sessions: sessionmaker[Session],
) -> None:
    failures = iter([RuntimeError("deadlock detected")])

    def fails_once(session: Session, order: OrderMessage) -> bool:
        for failure in failures:
            raise failure
        return record_order(session, order)

    order = an_order()
    publish(channel, topology.orders, order)
    worker = make_worker(apply=fails_once)

    results = [worker.process_one(timeout=3) for _ in range(2)]

    assert [(r.status, r.attempt) for r in results if r] == [("retrying", 1), ("processed", 2)]
    assert is_recorded(sessions, order["order_id"])


def test_run_in_a_thread(
    channel: BlockingChannel,
    make_worker: Callable[..., OrderWorker],
    topology: OrderTopology,
    sessions: sessionmaker[Session],
) -> None:
    orders = [an_order() for _ in range(3)]
    for order in orders:
        publish(channel, topology.orders, order)
    worker = make_worker()
    handled: list[int] = []

    thread = threading.Thread(target=lambda: handled.append(worker.run(idle_timeout=0.5)))
    thread.start()
    thread.join(timeout=10)

    assert not thread.is_alive(), "run() returns after idle_timeout"
    assert handled == [3]
    assert all(is_recorded(sessions, o["order_id"]) for o in orders)
    assert len(queued_json(channel, topology.notifications, expect=3)) == 3


def test_stop_ends_a_running_worker(make_worker: Callable[..., OrderWorker]) -> None:
    worker = make_worker()
    thread = threading.Thread(target=worker.run)
    thread.start()
    worker.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_conflicting_queue_is_explained(
    amqp_connection: pika.BlockingConnection, topology: OrderTopology
) -> None:
    amqp_connection.channel().queue_declare(topology.orders, durable=True)  # plain, no retry loop

    with pytest.raises(TopologyConflict, match=f"queue '{topology.orders}' already exists"):
        declare_topology(amqp_connection.channel(), topology)
