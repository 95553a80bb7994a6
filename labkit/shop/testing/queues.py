"""The order queue under test: per-test queues, workers as fixtures, real crashes.

    >>> from labkit.shop.testing.queues import an_order, publish, ready, topology, make_worker

Lessons 04a and 04b test the shop's `OrderWorker` on a live RabbitMQ with these, and so
can tests in `tests/`. Everything here takes its broker and database from the caller
(a channel, a URL, a session factory) or from labkit's fixtures: nothing names a host.

- **the broker**: `publish` (persistent JSON), `ready` and `consumers` (a queue's counts,
  read with a passive declare that changes nothing), `demo_queues` (fresh queues for one
  block of code), `crash_while_processing` (a consumer process SIGKILLed while it holds
  an order);
- **the worker**: `new_topology` and `delete_queues` (the worker's queues under names of
  one test's own), `an_order` (a valid order message), `order_sessions` (sessions on the
  shop's database, migrated), `counter` and `is_recorded` (what the worker committed);
- **crashes**: `Crash` and `record_then_crash` (a handler that dies inside its
  transaction), and `AckOnReceiptWorker` (the worker with the classic bug: it acks an
  order before recording it);
- **fixtures** (import them into a test module or a notebook to use them):
  `worker_sessions`, `topology`, `make_worker`, `running_worker`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy.orm import Session, sessionmaker

from labkit.services import Endpoint
from labkit.shop.data import AnalyticsCounter, ProcessedMessage, session_factory
from labkit.shop.testing.helpers import migrate_once
from labkit.shop.workers import (
    CONSUMER,
    OrderMessage,
    OrderTopology,
    OrderWorker,
    Result,
    declare_topology,
    parse_order,
    record_order,
)
from labkit.sql import engine_for
from labkit.waiting import wait_until

__all__ = [
    "CRASHING_CONSUMER",
    "AckOnReceiptWorker",
    "Crash",
    "an_order",
    "consumers",
    "counter",
    "crash_while_processing",
    "delete_queues",
    "demo_queues",
    "is_recorded",
    "make_worker",
    "new_topology",
    "order_sessions",
    "publish",
    "ready",
    "record_then_crash",
    "running_worker",
    "topology",
    "worker_sessions",
]

# -- the broker ---------------------------------------------------------------------------


def publish(channel: BlockingChannel, queue: str, body: Any, **properties: Any) -> None:
    """Publish `body` as persistent JSON to `queue` through the default exchange.

    On a channel with publisher confirms (``channel.confirm_delivery()``) this returns
    once the broker has the message, so a count read right after includes it.
    """
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=json.dumps(body).encode(),
        properties=pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            **properties,
        ),
    )


def ready(channel: BlockingChannel, queue: str) -> int:
    """Messages waiting in `queue`, not yet delivered to any consumer."""
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def consumers(channel: BlockingChannel, queue: str) -> int:
    """Consumers the broker lists on `queue`: a crashed one is gone once the broker noticed."""
    return int(channel.queue_declare(queue, passive=True).method.consumer_count)


@contextmanager
def demo_queues(channel: BlockingChannel, *roles: str) -> Iterator[dict[str, str]]:
    """Fresh durable queues named after their role (``orders-1a2b3c4d``), deleted after."""
    names = {role: f"{role}-{uuid.uuid4().hex[:8]}" for role in roles}
    for name in names.values():
        channel.queue_declare(name, durable=True)
    try:
        yield names
    finally:
        for name in names.values():
            channel.queue_delete(name)


# A consumer as a process of its own, so that it can really die: it takes one message,
# says so, and "works" on it until its parent says so or kills it.
CRASHING_CONSUMER = """
import os, sys, pika
queue, auto_ack = sys.argv[1], sys.argv[2] == "auto"
channel = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"])).channel()
channel.basic_qos(prefetch_count=1)
for method, properties, body in channel.consume(queue, auto_ack=auto_ack, inactivity_timeout=10):
    if method is None:
        sys.exit("no message within 10 s")
    print(f"processing {body.decode()} redelivered={method.redelivered}", flush=True)
    sys.stdin.readline()
"""


def crash_while_processing(
    channel: BlockingChannel, amqp_url: str, queue: str, *, auto_ack: bool
) -> dict[str, int]:
    """Publish one order, let a consumer process take it, SIGKILL it: `ready` at each step.

    ``{"published": 1, "being processed": 0, "after the crash": …}``. The consumer prints
    once it holds the message, so nothing sleeps; after the kill (no ``finally``, no clean
    close: what the OOM killer does) the broker has dealt with the dead consumer once it
    no longer lists it. The URL reaches the process through its environment, not its
    command line, where any user of the machine could read the password in ``ps``.
    """
    counts = {}
    publish(channel, queue, {"orderId": "order-123"})
    counts["published"] = ready(channel, queue)
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_CONSUMER, queue, "auto" if auto_ack else "manual"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AMQP_URL": amqp_url},
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        said = process.stdout.readline()  # returns once the consumer has the message, or died
        if not said.startswith("processing"):
            raise RuntimeError(f"the consumer process failed: {process.stderr.read()}")
        counts["being processed"] = ready(channel, queue)
    finally:
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    wait_until(lambda: consumers(channel, queue) == 0, timeout=10, interval=0.02,
               message="the broker never noticed the crash")
    counts["after the crash"] = ready(channel, queue)
    return counts


# -- the worker ---------------------------------------------------------------------------


def new_topology(**options: Any) -> OrderTopology:
    """The worker's queue names, unique to one test or demo (``orders-1a2b3c4d``, …)."""
    suffix = uuid.uuid4().hex[:8]
    return OrderTopology(
        orders=f"orders-{suffix}", notifications=f"notifications-{suffix}", **options
    )


def delete_queues(channel: BlockingChannel, topology: OrderTopology) -> None:
    """Delete the four queues of `topology` (the orders, its retry and dead-letter queues,
    the notifications)."""
    for queue in (topology.orders, topology.retry, topology.dead, topology.notifications):
        channel.queue_delete(queue)


def an_order(**overrides: Any) -> dict[str, Any]:
    """A valid order message with a fresh id; `overrides` replace its fields."""
    return {
        "order_id": f"order-{uuid.uuid4().hex[:10]}",
        "user_id": "user-456",
        "items": [{"product_id": "prod-1", "quantity": 2}],
        "total": "59.98",
        **overrides,
    }


@cache
def order_sessions(database_url: str) -> sessionmaker[Session]:
    """Sessions on the shop's database at `database_url`, its schema migrated (once)."""
    migrate_once(database_url)
    return session_factory(engine_for(database_url))


def counter(sessions: sessionmaker[Session], name: str) -> int:
    """The analytics counter `name` as committed (0 if it was never added to).

    The worker commits for real: read counters as deltas, before and after.
    """
    with sessions() as session:
        row = session.get(AnalyticsCounter, name)
        return row.value if row else 0


def is_recorded(sessions: sessionmaker[Session], order_id: str) -> bool:
    """Whether the order worker committed `order_id` (its row in processed_messages)."""
    with sessions() as session:
        return session.get(ProcessedMessage, f"{CONSUMER}:{order_id}") is not None


# -- crashes ------------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no ``except Exception`` in the
    worker catches it; like a real crash, it stops everything."""


def record_then_crash(session: Session, order: OrderMessage) -> bool:
    """A handler that records the order, then dies before the worker can commit."""
    record_order(session, order)
    raise Crash(f"worker died while recording {order.order_id}")


class AckOnReceiptWorker:
    """The order worker with a classic bug: it acks an order as soon as it arrives.

    Built like `OrderWorker` and with its parsing and recording, but without
    notifications and retries, so that what differs is *when* it acks: before the
    transaction, where a crash loses the order (acked, so the broker forgot it; never
    committed, so the database never had it).
    """

    def __init__(
        self,
        connection_params: pika.connection.Parameters,
        session_factory: sessionmaker[Session],
        topology: OrderTopology,
        apply: Callable[[Session, OrderMessage], bool] = record_order,
    ) -> None:
        self.connection = pika.BlockingConnection(connection_params)
        self.channel = self.connection.channel()
        declare_topology(self.channel, topology)
        self.deliveries = self.channel.consume(topology.orders, inactivity_timeout=0.05)
        self.session_factory, self.apply = session_factory, apply

    def process_one(self, timeout: float = 1.0) -> Result | None:
        deadline = time.monotonic() + timeout
        for method, _properties, body in self.deliveries:
            if method is not None:
                self.channel.basic_ack(method.delivery_tag)  # "got it": nothing is safe yet
                order = parse_order(body)
                with self.session_factory() as session, session.begin():
                    first_time = self.apply(session, order)
                return Result("processed" if first_time else "duplicate", order.order_id, 1)
            if time.monotonic() >= deadline:
                return None
        return None

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def worker_sessions(postgres: Endpoint) -> sessionmaker[Session]:
    """Sessions on the shop's database (migrated), the ones the workers commit through."""
    return order_sessions(postgres.url)


@pytest.fixture
def topology(amqp_connection: pika.BlockingConnection) -> Iterator[OrderTopology]:
    """The worker's queues under names of this test's own, deleted after it.

    The retry delay is 20 ms, so that a test of retries costs nothing.
    """
    names = new_topology(retry_delay_ms=20)
    declare_topology(amqp_connection.channel(), names)
    yield names
    delete_queues(amqp_connection.channel(), names)


@pytest.fixture
def make_worker(
    rabbitmq: Endpoint, topology: OrderTopology, worker_sessions: sessionmaker[Session]
) -> Iterator[Callable[..., Any]]:
    """Build workers on the test's queues: ``make_worker()``, ``make_worker(apply=…)``,
    ``make_worker(AckOnReceiptWorker)``; each has its own connection, closed after."""
    workers: list[Any] = []

    def make(worker_class: Callable[..., Any] = OrderWorker, **options: Any) -> Any:
        worker = worker_class(
            pika.URLParameters(rabbitmq.url), worker_sessions, topology, **options
        )
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.close()


@pytest.fixture
def running_worker(make_worker: Callable[..., OrderWorker]) -> Iterator[OrderWorker]:
    """An `OrderWorker` running its loop in its own thread, as production runs it;
    stopped after the test (which fails if it does not stop within 5 s)."""
    worker = make_worker()
    thread = threading.Thread(target=worker.run, name="order-worker", daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the worker did not stop within 5 s"
