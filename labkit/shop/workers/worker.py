"""The order worker: consumes ``orders``, records each order once, confirms it.

    >>> worker = OrderWorker(pika.URLParameters(amqp_url), session_factory(engine))
    >>> worker.process_one(timeout=2)          # step by step, for tests and lessons
    Result(status='processed', order_id='order-123', attempt=1, error=None)
    >>> worker.run(idle_timeout=5)             # or as a loop, e.g. in a thread

A message ``{order_id, user_id, items: [{product_id, quantity}], total}`` is handled as:

1. parse and validate it — malformed (bad JSON, wrong shape): straight to the
   dead-letter queue, since no retry can fix it;
2. in one database transaction, record ``order-worker:{order_id}`` in
   ``processed_messages`` and add to the ``orders_processed`` and ``revenue_cents``
   counters, then commit. A redelivered or re-sent order finds its record and
   changes nothing: processing is idempotent;
3. publish ``{type: "order_confirmation", order_id}`` to ``notifications``
   (persistent, confirmed by the broker);
4. only then ack. A crash anywhere before the ack leaves the message unacked, and
   RabbitMQ delivers it again: nothing is lost, and step 2 keeps it from counting twice.

If step 2 raises, the message is rejected and RabbitMQ dead-letters it to
``orders.retry``, a queue without consumers whose TTL sends it back to ``orders``
after `retry_delay_ms`. Each pass adds to the ``x-death`` header's count, so the
worker knows the attempt number, and on the `max_attempts`-th failure it moves the
message to ``orders.dead`` instead. This works on classic queues of any RabbitMQ 3.x.
What it cannot count is a message that kills the worker process itself (the broker
requeues it without a mark); quorum queues' ``x-delivery-limit`` covers that case.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.data.models import AnalyticsCounter, ProcessedMessage

log = logging.getLogger(__name__)

CONSUMER = "order-worker"
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class OrderTopology:
    """The queues the worker uses; tests give each run its own names."""

    orders: str = "orders"
    notifications: str = "notifications"
    max_attempts: int = 3
    retry_delay_ms: int = 1000

    @property
    def retry(self) -> str:
        return f"{self.orders}.retry"

    @property
    def dead(self) -> str:
        return f"{self.orders}.dead"


class TopologyConflict(RuntimeError):
    """A queue exists under one of the worker's names but with other arguments."""


def declare_topology(channel: BlockingChannel, topology: OrderTopology = OrderTopology()) -> None:
    """Declare the durable queues and the retry loop between them (idempotent)."""
    queues: list[tuple[str, dict[str, Any]]] = [
        (topology.dead, {}),
        (topology.notifications, {}),
        (
            topology.retry,
            {
                "x-message-ttl": topology.retry_delay_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": topology.orders,
            },
        ),
        (
            topology.orders,
            {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": topology.retry},
        ),
    ]
    for queue, arguments in queues:
        try:
            channel.queue_declare(queue, durable=True, arguments=arguments or None)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:  # PRECONDITION_FAILED: same name, other arguments
                raise
            raise TopologyConflict(
                f"queue {queue!r} already exists with other arguments than the order worker's "
                f"{arguments or '(none)'} ({exc.reply_text}). Delete it (rabbitmqctl "
                "delete_queue, or channel.queue_delete) or give OrderTopology other names."
            ) from None


class OrderLine(BaseModel):
    product_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0)


class OrderMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    order_id: str = Field(min_length=1, max_length=100)
    user_id: str = Field(min_length=1, max_length=100)
    items: list[OrderLine] = Field(min_length=1)
    total: Decimal = Field(ge=0, decimal_places=2)


class InvalidMessage(ValueError):
    """The message can never be processed as it is: retrying would not help."""


def parse_order(body: bytes) -> OrderMessage:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(f"expected a JSON object, got {body[:80]!r} ({exc})") from None
    try:
        return OrderMessage.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidMessage(f"not an order message ({problems})") from None


def record_order(session: Session, order: OrderMessage) -> bool:
    """Apply `order` once: False (and no change) if it was already applied."""
    claimed = session.execute(
        insert(ProcessedMessage)
        .values(message_id=f"{CONSUMER}:{order.order_id}", consumer=CONSUMER)
        .on_conflict_do_nothing()
        .returning(ProcessedMessage.message_id)
    ).scalar_one_or_none()
    if claimed is None:
        return False
    add_to_counter(session.connection(), "orders_processed", 1)
    add_to_counter(session.connection(), "revenue_cents", int(order.total * 100))
    return True


def add_to_counter(connection: Connection, name: str, amount: int) -> None:
    """One atomic upsert: concurrent workers cannot lose each other's increments."""
    statement = insert(AnalyticsCounter).values(name=name, value=amount)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=[AnalyticsCounter.name],
            set_={"value": AnalyticsCounter.value + statement.excluded.value},
        )
    )


Status = Literal["processed", "duplicate", "retrying", "dead-lettered"]


@dataclass(frozen=True)
class Result:
    status: Status
    order_id: str | None
    attempt: int
    error: str | None = None


def attempts_before(properties: BasicProperties, queue: str) -> int:
    """How often RabbitMQ has already dead-lettered this message out of `queue`."""
    for death in (properties.headers or {}).get("x-death", []):
        if _text(death.get("queue")) == queue and _text(death.get("reason")) == "rejected":
            return int(death.get("count", 0))
    return 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class OrderWorker:
    """Consumes the orders queue with manual acks; see the module's docstring.

    The AMQP connection opens on first use, in the thread that uses the worker (pika's
    BlockingConnection belongs to one thread): build it anywhere, then call `run` or
    `process_one` from a single thread.
    """

    def __init__(
        self,
        connection_params: pika.connection.Parameters,
        session_factory: sessionmaker[Session],
        topology: OrderTopology = OrderTopology(),
        prefetch: int = 10,
        apply: Callable[[Session, OrderMessage], bool] = record_order,
    ) -> None:
        self.connection_params = connection_params
        self.session_factory = session_factory
        self.topology = topology
        self.prefetch = prefetch
        self.apply = apply
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._deliveries: Iterator[Any] | None = None
        self._stop = threading.Event()

    # -- the AMQP side -------------------------------------------------------------

    def _open(self) -> Iterator[Any]:
        if self._deliveries is None or self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = pika.BlockingConnection(self.connection_params)
            channel = self._connection.channel()
            # Confirms: a publish returns once the broker has the message, so the
            # ack that follows can never be for a message that then went missing.
            channel.confirm_delivery()
            declare_topology(channel, self.topology)
            channel.basic_qos(prefetch_count=self.prefetch)
            self._channel = channel
            self._deliveries = channel.consume(
                self.topology.orders, auto_ack=False, inactivity_timeout=POLL_SECONDS
            )
        return self._deliveries

    def close(self) -> None:
        """Close the connection; unacked messages go back to the queue."""
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        self._connection = self._channel = self._deliveries = None

    def stop(self) -> None:
        """Make `run` (in another thread) return after the message in hand, for good."""
        self._stop.set()

    # -- processing ----------------------------------------------------------------

    def process_one(self, timeout: float = 1.0) -> Result | None:
        """Wait up to `timeout` seconds for one message and handle it; None if none came."""
        deliveries = self._open()
        deadline = time.monotonic() + timeout
        while True:
            method, properties, body = next(deliveries)
            if method is not None:
                return self._handle(method, properties, body)
            if time.monotonic() >= deadline or self._stop.is_set():
                return None

    def run(self, max_messages: int | None = None, idle_timeout: float | None = None) -> int:
        """Handle messages until `max_messages`, `idle_timeout` seconds without one, or
        `stop()`. Returns how many were handled; closes the connection at the end."""
        handled = 0
        try:
            idle_since = time.monotonic()
            while not self._stop.is_set() and (max_messages is None or handled < max_messages):
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    break
                if self.process_one(timeout=POLL_SECONDS * 4) is not None:
                    handled += 1
                    idle_since = time.monotonic()
        finally:
            self.close()
        return handled

    def _handle(self, method: Basic.Deliver, properties: BasicProperties, body: bytes) -> Result:
        assert self._channel is not None
        attempt = attempts_before(properties, self.topology.orders) + 1
        try:
            order = parse_order(body)
        except InvalidMessage as exc:
            self._dead_letter(properties, body, str(exc), attempt)
            self._channel.basic_ack(method.delivery_tag)
            return Result("dead-lettered", None, attempt, str(exc))

        try:
            with self.session_factory() as session, session.begin():
                first_time = self.apply(session, order)
        except Exception as exc:  # noqa: BLE001  (whatever the handler raises is one failed attempt)
            error = f"{exc.__class__.__name__}: {exc}"
            if attempt >= self.topology.max_attempts:
                self._dead_letter(properties, body, error, attempt)
                self._channel.basic_ack(method.delivery_tag)
                return Result("dead-lettered", order.order_id, attempt, error)
            log.warning(
                "order %s failed (attempt %d), retrying: %s", order.order_id, attempt, error
            )
            self._channel.basic_nack(method.delivery_tag, requeue=False)
            return Result("retrying", order.order_id, attempt, error)

        # Sent for duplicates too: the first delivery may have crashed right after its
        # commit, before notifying. Consumers of notifications dedupe on message_id.
        self._notify(order)
        self._channel.basic_ack(method.delivery_tag)
        return Result("processed" if first_time else "duplicate", order.order_id, attempt)

    def _notify(self, order: OrderMessage) -> None:
        assert self._channel is not None
        self._channel.basic_publish(
            exchange="",
            routing_key=self.topology.notifications,
            body=json.dumps({"type": "order_confirmation", "order_id": order.order_id}),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=f"order-confirmation:{order.order_id}",
            ),
        )

    def _dead_letter(
        self, properties: BasicProperties, body: bytes, error: str, attempt: int
    ) -> None:
        assert self._channel is not None
        log.error("order message dead-lettered after attempt %d: %s", attempt, error)
        headers = {**(properties.headers or {}), "x-error": error[:500], "x-attempts": attempt}
        self._channel.basic_publish(
            exchange="",
            routing_key=self.topology.dead,
            body=body,
            properties=pika.BasicProperties(
                content_type=properties.content_type,
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=properties.message_id,
                headers=headers,
            ),
        )
