"""The serving shop delivers every event through a RabbitMQ outage, with no manual step.

Issue #14's acceptance test: two shop workers (two apps, each with its own outbox
relay, on one database) serve over real HTTP while a few clients sign up and order.
Midway RabbitMQ is frozen for the shops (`outages.frozen`: the `labkit.faults` proxy
they reach it through stops moving bytes, on every backend) until both shops have
noticed, then thawed. Afterwards every accepted sign-up's
welcome email and every accepted order's ORDER_CREATED event reach their idempotent
consumers, and each has its effect exactly once: one email per address, one counter
increment per order. Nothing here calls `relay_once`: the shops' background relays do
the delivering, and with ``outbox_relay_interval=0`` this test fails (the events written
while the broker was away stay in the outbox).
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pika
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from labkit.services import Endpoint
from labkit.shop.app import ShopServer
from labkit.shop.data import AnalyticsCounter, OutboxEvent, ProcessedMessage
from labkit.shop.testing import FakeDownstream, auth_header, queued_json
from labkit.shop.testing.outages import frozen
from labkit.shop.workers import (
    OrderEventConsumer,
    WelcomeEmail,
    WelcomeEmailConsumer,
    unpublished_count,
)
from labkit.waiting import wait_until

pytestmark = pytest.mark.slow

USERS = 500  # each signs up, then places one order: 500 sign-ups and 500 orders
CLIENTS = 4  # threads, each with its own httpx client, alternating between the shops
RELAY_INTERVAL = 0.5
DELIVERY_DEADLINE = 180.0  # seconds after the broker is back; generous for a loaded CI box


@dataclass
class Load:
    """What the clients did: what the shops accepted (201), and anything else."""

    accepted_emails: set[str] = field(default_factory=set)
    accepted_orders: set[str] = field(default_factory=set)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    users_done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_clients(urls: list[str], settings: Any, load: Load, run: str) -> list[threading.Thread]:
    """Start `CLIENTS` threads that sign up and order for `USERS` users between them."""

    def client(number: int) -> None:
        with httpx.Client(base_url=urls[number % len(urls)], timeout=60.0) as http:
            for index in range(number, USERS, CLIENTS):
                email = f"relay-{run}-{index}@example.com"
                signup = http.post(
                    "/api/users",
                    json={"email": email, "name": f"User {index}", "password": "SecurePass123!"},
                )
                order = None
                if signup.status_code == 201:
                    order = http.post(
                        "/api/orders",
                        json={
                            "items": [
                                {
                                    "productId": f"SKU-{index % 7}",
                                    "quantity": 1,
                                    "unitPrice": "9.99",
                                }
                            ],
                            "paymentMethod": "CREDIT_CARD",
                        },
                        headers=auth_header(settings, signup.json()["id"]),
                    )
                with load.lock:
                    if signup.status_code == 201:
                        load.accepted_emails.add(email)
                    else:
                        load.refused[f"sign-up {signup.status_code}"] += 1
                    if order is not None and order.status_code == 201:
                        load.accepted_orders.add(order.json()["orderId"])
                    elif order is not None:
                        load.refused[f"order {order.status_code}: {order.text[:80]}"] += 1
                    load.users_done += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    return threads


@pytest.fixture
def queues(amqp_connection: pika.BlockingConnection) -> Iterator[dict[str, str]]:
    """This test's own email and order-event queues, deleted afterwards."""
    names = {
        "email_queue": f"email-{uuid.uuid4().hex[:8]}",
        "order_events_exchange": f"order-events-{uuid.uuid4().hex[:8]}",
    }
    yield names
    channel = amqp_connection.channel()
    for name in names.values():
        channel.queue_delete(name)


@pytest.fixture
def shops(
    make_shop_app: Callable[..., FastAPI],
    shop_clean: None,
    shop_downstream: FakeDownstream,
    queues: dict[str, str],
) -> list[FastAPI]:
    """Two shop workers on one database, each with its relay every RELAY_INTERVAL s."""
    shop_downstream.inventory.default_stock = 10 * USERS
    return [make_shop_app(outbox_relay_interval=RELAY_INTERVAL, **queues) for _ in range(2)]


def processed(sessions: sessionmaker[Session], consumer: str) -> list[str]:
    """The outbox ids `consumer` applied (each row is one applied message)."""
    with sessions() as session:
        ids = session.scalars(
            select(ProcessedMessage.message_id).where(ProcessedMessage.consumer == consumer)
        )
        return [message_id.removeprefix(f"{consumer}:") for message_id in ids]


def order_ids_of(sessions: sessionmaker[Session], outbox_ids: list[str]) -> list[str]:
    with sessions() as session:
        events = session.scalars(
            select(OutboxEvent).where(OutboxEvent.id.in_([uuid.UUID(i) for i in outbox_ids]))
        )
        return [event.payload["orderId"] for event in events]


def test_every_event_is_delivered_once_after_a_broker_outage(
    shops: list[FastAPI],
    queues: dict[str, str],
    rabbitmq: Endpoint,
    redis_client: Any,
) -> None:
    shop = shops[0].state.shop
    sessions = shop.sessions
    load = Load()
    run = uuid.uuid4().hex[:6]

    with ShopServer(shops[0]) as first, ShopServer(shops[1]) as second:
        clients = run_clients([first.url, second.url], shop.settings, load, run)
        wait_until(lambda: load.users_done >= USERS // 4, timeout=120, message="first quarter")
        freeze = frozen("rabbitmq")
        try:
            frozen_at = time.monotonic()
            users_before = load.users_done
            # Resume once most of the load has run into the outage and every running relay
            # has failed against the frozen broker (its heartbeat noticed).
            relays = [
                app.state.shop.jobs.stats["outbox-relay"]
                for app in shops
                if "outbox-relay" in app.state.shop.jobs.running
            ]
            wait_until(
                lambda: (
                    load.users_done >= 3 * USERS // 4 and all(relay.failures for relay in relays)
                ),
                timeout=120,
                message="the load to run on and every relay to notice the outage",
            )
            users_during = load.users_done - users_before
        finally:
            freeze.off()
        resumed_at, resumed_wall = time.monotonic(), datetime.now(UTC)
        for thread in clients:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in clients), "clients still running"

        try:
            wait_until(
                lambda: unpublished_count(sessions) == 0,
                timeout=DELIVERY_DEADLINE,
                message="the shops' relays to publish every outbox event",
            )
        except TimeoutError:
            pytest.fail(
                f"{unpublished_count(sessions)} events still unpublished in the outbox "
                f"{DELIVERY_DEADLINE} s after RabbitMQ came back: nothing relayed them"
            )
        # The backlog: events written before the broker came back, mostly during the
        # outage. When was the last of them published (the relay's clock)?
        with sessions() as session:
            backlog_done = session.scalar(
                select(func.max(OutboxEvent.published_at)).where(
                    OutboxEvent.created_at < resumed_wall
                )
            )
        backlog_lag = (backlog_done - resumed_wall).total_seconds()
        relay_lag = time.monotonic() - resumed_at

        sent: list[WelcomeEmail] = []
        outcomes: collections.Counter[str] = collections.Counter()
        consumers = {
            queues["email_queue"]: WelcomeEmailConsumer(sessions, send=sent.append),
            queues["order_events_exchange"]: OrderEventConsumer(sessions, redis_client),
        }
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
        try:
            channel = connection.channel()
            while True:  # until both queues are empty: every copy of every event seen
                handled = {
                    queue: consumer.handle_next(channel, queue, timeout=0.5)
                    for queue, consumer in consumers.items()
                }
                outcomes.update(f"{queue.split('-')[0]} {h}" for queue, h in handled.items() if h)
                if not any(handled.values()):
                    break
        finally:
            connection.close()
        delivered_lag = time.monotonic() - resumed_at

    emails = collections.Counter(email.to for email in sent)
    order_events = order_ids_of(sessions, processed(sessions, OrderEventConsumer.name))
    with sessions() as session:
        orders_created = session.scalar(
            select(func.coalesce(func.sum(AnalyticsCounter.value), 0)).where(
                AnalyticsCounter.name == "orders_created"
            )
        )
    print(
        f"\n{USERS} users by {CLIENTS} clients on 2 shops; RabbitMQ frozen "
        f"{resumed_at - frozen_at:.1f} s, during which {users_during} users signed up and "
        f"ordered. After it came back, the last event written before was published in "
        f"{backlog_lag:.1f} s (relay every {RELAY_INTERVAL} s, backoff up to "
        f"{shop.settings.background_max_backoff} s); the clients finished and the outbox "
        f"was empty after {relay_lag:.1f} s, every message consumed after "
        f"{delivered_lag:.1f} s. Consumer outcomes: {dict(outcomes)}. "
        f"Relay passes/failures: "
        + ", ".join(
            f"{app.state.shop.jobs.stats['outbox-relay'].passes}/"
            f"{app.state.shop.jobs.stats['outbox-relay'].failures}"
            for app in shops
        )
    )

    assert users_during > 0, "the outage must meet sign-ups and orders"
    assert not load.refused, f"the API refused requests during the outage: {load.refused}"
    assert len(load.accepted_emails) == USERS and len(load.accepted_orders) == USERS
    assert set(emails) == load.accepted_emails, (
        f"{len(load.accepted_emails - set(emails))} accepted sign-ups got no email, "
        f"{len(set(emails) - load.accepted_emails)} emails went to no accepted sign-up"
    )
    assert [to for to, count in emails.items() if count > 1] == [], "emails sent twice"
    assert collections.Counter(order_events) == collections.Counter(load.accepted_orders), (
        f"{len(load.accepted_orders - set(order_events))} accepted orders' events never "
        f"applied; {len(order_events) - len(set(order_events))} applied twice"
    )
    assert orders_created == len(load.accepted_orders)


def test_a_sign_up_while_the_broker_is_frozen_is_accepted_and_its_email_relayed_after(
    make_shop_app: Callable[..., FastAPI],
    shop_clean: None,
    amqp_channel: Any,
    amqp_queue: Callable[..., str],
) -> None:
    """A frozen broker times out the publisher's AMQP handshake; that error (pika's own
    AMQPConnectorException, not an AMQPError) once escaped `publish_now` as a 500."""
    queue = amqp_queue()
    app = make_shop_app(outbox_relay_interval=RELAY_INTERVAL, email_queue=queue)
    user = {"email": "frozen@example.com", "name": "Frozen", "password": "SecurePass123!"}

    with ShopServer(app) as server:
        with frozen("rabbitmq"):
            started = time.monotonic()
            response = httpx.post(f"{server.url}/api/users", json=user, timeout=60)
            took = time.monotonic() - started
            # Nothing can be published while the shop's broker link is frozen: an event
            # sent already would mean the freeze never reached the shop.
            unsent_in_the_freeze = unpublished_count(app.state.shop.sessions)
        emails = queued_json(amqp_channel, queue, timeout=DELIVERY_DEADLINE)

    print(f"\nsign-up with RabbitMQ frozen answered {response.status_code} in {took:.1f} s")
    assert response.status_code == 201, response.text
    assert unsent_in_the_freeze == 1, "the welcome email left during the freeze"
    assert [email["to"] for email in emails] == [user["email"]]
