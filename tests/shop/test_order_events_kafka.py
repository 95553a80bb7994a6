"""The shop streams its order events to Kafka, as the seed's order service does, end to end.

The seed's Spring test: POST /api/orders answers 201 and ORDER_CREATED appears on
`order-events`, keyed by the order id; 409 INVENTORY_UNAVAILABLE publishes nothing.
Here on a live broker (Tansu on the local backend), through the shop's outbox and its
Kafka relay, with RabbitMQ still the workflow's broker beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer
from fastapi import FastAPI
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import select

from labkit.kafka import consume, consumer_lag
from labkit.services import Endpoint
from labkit.shop.app import ShopServer
from labkit.shop.data import OutboxEvent
from labkit.shop.settings import ShopSettings
from labkit.shop.testing import client_for, queued_json
from labkit.waiting import wait_until

SEED_ORDER = {
    "items": [
        {"productId": "product-1", "quantity": 2, "unitPrice": "29.99"},
        {"productId": "product-2", "quantity": 1, "unitPrice": "49.99"},
    ],
    "paymentMethod": "CREDIT_CARD",
}


@pytest.fixture
def workflow_queue(amqp_queue: Callable[..., str]) -> str:
    """The RabbitMQ queue of the order events, this test's own."""
    return amqp_queue()


@pytest.fixture
def streaming_app(
    make_shop_app: Callable[..., FastAPI],
    shop_clean: None,
    kafka: Endpoint,
    kafka_topic: str,
    workflow_queue: str,
) -> FastAPI:
    """The shop streaming its order events to this test's fresh topic."""
    return make_shop_app(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        kafka_order_events_topic=kafka_topic,
        order_events_exchange=workflow_queue,
        outbox_relay_interval=0.1,
    )


def passes_of(app: FastAPI, job: str) -> int:
    return int(app.state.shop.jobs.stats[job].passes)


def test_order_created_is_on_kafka_keyed_by_the_order_id(
    streaming_app: FastAPI,
    kafka_topic: str,
    kafka_consumer: Consumer,
    buyer: Any,
    as_buyer: dict[str, str],
    amqp_channel: BlockingChannel,
    workflow_queue: str,
) -> None:
    with ShopServer(streaming_app):
        response = client_for(streaming_app).post("/api/orders", json=SEED_ORDER,
                                                  headers=as_buyer)
        assert response.status_code == 201, response.text
        order_id = response.json()["orderId"]
        kafka_consumer.subscribe([kafka_topic])
        received = consume(kafka_consumer, 1, timeout=30)
        on_rabbitmq = queued_json(amqp_channel, workflow_queue, timeout=30)

    assert len(received) == 1, "ORDER_CREATED should reach Kafka within 30 s"
    (event,) = received
    assert event.key() == order_id.encode(), "keyed by order id: one order, one partition"
    assert json.loads(event.value()) == {
        "eventType": "ORDER_CREATED",
        "orderId": order_id,
        "userId": str(buyer.id),
        "totalAmount": "109.97",
    }
    headers = dict(event.headers() or [])
    assert headers["type"] == b"ORDER_CREATED"
    with streaming_app.state.shop.sessions() as session:
        rows = session.scalars(select(OutboxEvent).where(
            OutboxEvent.destination == f"kafka:{kafka_topic}")).all()
    assert [str(row.id).encode() for row in rows] == [headers["message_id"]], \
        "the outbox row's id is the message_id consumers deduplicate on"
    assert [body["orderId"] for body in on_rabbitmq] == [order_id], "RabbitMQ still gets it"


def test_inventory_unavailable_is_409_and_no_event(
    streaming_app: FastAPI,
    kafka: Endpoint,
    kafka_topic: str,
    shop_downstream: Any,
    as_buyer: dict[str, str],
) -> None:
    shop_downstream.inventory.stock["product-2"] = 0
    with ShopServer(streaming_app):
        response = client_for(streaming_app).post("/api/orders", json=SEED_ORDER,
                                                  headers=as_buyer)
        assert response.status_code == 409
        assert response.json()["error"] == "INVENTORY_UNAVAILABLE"
        # two whole passes of the Kafka relay after the answer: whatever it had, it sent
        after = passes_of(streaming_app, "kafka-relay")
        wait_until(lambda: passes_of(streaming_app, "kafka-relay") >= after + 2, timeout=30,
                   message="two passes of the Kafka relay")

    ends = {p: lag.end for p, lag in consumer_lag(kafka, "nobody", kafka_topic).items()}
    assert sum(ends.values()) == 0, f"no event on {kafka_topic}, found {ends} (end offsets)"


def test_a_kafka_outage_delays_the_stream_never_the_workflow(
    make_shop_app: Callable[..., FastAPI],
    shop_clean: None,
    workflow_queue: str,
    amqp_channel: BlockingChannel,
    as_buyer: dict[str, str],
) -> None:
    """No broker at the bootstrap address: the order still reaches RabbitMQ, and its
    Kafka copy waits in the outbox, the relay failing and retrying with backoff."""
    app = make_shop_app(
        kafka_bootstrap_servers="127.0.0.1:1",
        kafka_timeout=1.0,
        order_events_exchange=workflow_queue,
        outbox_relay_interval=0.1,
    )
    stats = app.state.shop.jobs.stats["kafka-relay"]
    with ShopServer(app):
        response = client_for(app).post("/api/orders", json=SEED_ORDER, headers=as_buyer)
        assert response.status_code == 201
        on_rabbitmq = queued_json(amqp_channel, workflow_queue, timeout=30)
        wait_until(lambda: stats.failures, timeout=30, message="the Kafka relay to fail")

    assert [body["orderId"] for body in on_rabbitmq] == [response.json()["orderId"]]
    assert "not acknowledged by Kafka" in (stats.last_error or "")
    with app.state.shop.sessions() as session:
        waiting = session.scalars(select(OutboxEvent).where(
            OutboxEvent.destination.startswith("kafka:"))).all()
    assert [row.published_at for row in waiting] == [None], "kept for the next pass"


def test_without_kafka_settings_the_shop_streams_nothing(shop_settings: ShopSettings) -> None:
    assert shop_settings.kafka_bootstrap_servers == ""
    assert shop_settings.order_event_destinations == (shop_settings.order_events_exchange,)
