"""POST /api/orders: a saga over real HTTP services, with money kept exact."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from labkit.services import free_port
from labkit.shop.app import UNAVAILABLE_BODY
from labkit.shop.data import Order, OrderStatus, OutboxEvent
from labkit.shop.testing import add_user, auth_header, client_for, database_outage

SEED_ORDER = {
    "items": [
        {"productId": "product-1", "quantity": 2, "unitPrice": "29.99"},
        {"productId": "product-2", "quantity": 1, "unitPrice": "49.99"},
    ],
    "paymentMethod": "CREDIT_CARD",
}


@pytest.fixture
def buyer(shop_session):
    return add_user(shop_session, email="buyer@example.com", name="Buyer")


@pytest.fixture
def as_buyer(shop_settings, buyer):
    return auth_header(shop_settings, buyer.id)


def test_order_is_confirmed_paid_and_its_event_is_in_the_outbox(
    shop_client, shop_session, shop_downstream, buyer, as_buyer
):
    response = shop_client.post("/api/orders", json=SEED_ORDER, headers=as_buyer)

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "CONFIRMED"
    assert Decimal(body["totalAmount"]) == Decimal("109.97")  # exact: Decimals, never a float sum

    order = shop_session.scalars(select(Order)).one()
    assert str(order.id) == body["orderId"]
    assert order.status == OrderStatus.CONFIRMED
    assert order.total_amount == Decimal("109.97")
    assert [(i.product_id, i.quantity, i.unit_price) for i in order.items] == [
        ("product-1", 2, Decimal("29.99")),
        ("product-2", 1, Decimal("49.99")),
    ]
    assert order.payment_transaction_id.startswith("txn-")

    event = shop_session.scalars(
        select(OutboxEvent).where(OutboxEvent.event_type == "ORDER_CREATED")
    ).one()
    assert event.payload == {
        "eventType": "ORDER_CREATED",
        "orderId": body["orderId"],
        "userId": str(buyer.id),
        "totalAmount": "109.97",
    }
    assert event.published_at is None  # the outbox relay's job

    (check,) = shop_downstream.inventory.calls_to("/check")
    assert check.body["items"] == [
        {"productId": "product-1", "quantity": 2},
        {"productId": "product-2", "quantity": 1},
    ]
    assert len(shop_downstream.inventory.calls_to("/reserve")) == 1
    (payment,) = shop_downstream.payment.calls_to("/payments")
    assert payment.body["amount"] == "109.97"
    assert payment.headers["idempotency-key"] == body["orderId"]


def test_out_of_stock_is_409_with_no_order_and_no_payment(
    shop_client, shop_session, shop_downstream, as_buyer
):
    shop_downstream.inventory.stock["product-2"] = 0

    response = shop_client.post("/api/orders", json=SEED_ORDER, headers=as_buyer)

    assert response.status_code == 409
    assert response.json()["error"] == "INVENTORY_UNAVAILABLE"
    assert shop_session.scalars(select(Order)).all() == []
    assert shop_session.scalars(select(OutboxEvent)).all() == []
    assert shop_downstream.payment.calls == []
    assert shop_downstream.inventory.calls_to("/reserve") == []


def test_declined_payment_releases_stock_and_keeps_a_declined_order(
    shop_client, shop_session, shop_downstream, as_buyer
):
    shop_downstream.payment.decline = True

    response = shop_client.post("/api/orders", json=SEED_ORDER, headers=as_buyer)

    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "PAYMENT_DECLINED"
    order = shop_session.get(Order, body["orderId"])
    assert order.status == OrderStatus.PAYMENT_DECLINED
    (release,) = shop_downstream.inventory.calls_to("/release")
    assert release.body == {"orderId": body["orderId"]}
    assert shop_downstream.inventory.reservations == {}  # the compensation happened
    assert shop_downstream.inventory.stock == {"product-1": 100, "product-2": 100}
    assert shop_session.scalars(select(OutboxEvent)).all() == []


def test_payment_timeout_is_503_and_releases_the_reservation(
    shop_client, shop_session, shop_settings, shop_downstream, as_buyer
):
    shop_downstream.payment.delay = shop_settings.downstream_timeout + 0.5

    response = shop_client.post("/api/orders", json=SEED_ORDER, headers=as_buyer)

    assert response.status_code == 503
    assert response.json() == UNAVAILABLE_BODY
    order = shop_session.scalars(select(Order)).one()
    assert order.status == OrderStatus.PAYMENT_FAILED
    assert len(shop_downstream.inventory.calls_to("/release")) == 1
    assert shop_session.scalars(select(OutboxEvent)).all() == []


@pytest.mark.parametrize("failure", ["unreachable", "error-status"])
def test_inventory_failure_is_503_with_nothing_stored(
    make_shop_app, shop_client, shop_session, shop_downstream, as_buyer, failure
):
    if failure == "unreachable":
        client = client_for(make_shop_app(inventory_url=f"http://127.0.0.1:{free_port()}"))
    else:
        shop_downstream.inventory.fail_status = 500
        client = shop_client

    response = client.post("/api/orders", json=SEED_ORDER, headers=as_buyer)

    assert response.status_code == 503
    assert response.json() == UNAVAILABLE_BODY
    assert shop_session.scalars(select(Order)).all() == []
    assert shop_downstream.payment.calls == []


def test_database_outage_is_503_before_anything_is_reserved_or_charged(
    shop_client, shop_settings, shop_session, shop_downstream, as_buyer
):
    shop_client.get("/health")
    with database_outage(shop_settings.database_url):
        response = shop_client.post("/api/orders", json=SEED_ORDER, headers=as_buyer)

    assert response.status_code == 503
    assert shop_downstream.inventory.calls_to("/reserve") == []
    assert shop_downstream.payment.calls == []
    assert shop_session.scalars(select(Order)).all() == []


def test_orders_need_a_token(shop_client, shop_downstream):
    assert shop_client.post("/api/orders", json=SEED_ORDER).status_code == 401
    assert shop_downstream.inventory.calls == []


@pytest.mark.parametrize(
    "change",
    [
        {"items": []},
        {"items": [{"productId": "p", "quantity": 0, "unitPrice": "1.00"}]},
        {"items": [{"productId": "p", "quantity": -1, "unitPrice": "1.00"}]},
        {"items": [{"productId": "p", "quantity": 10**30, "unitPrice": "1.00"}]},
        {"items": [{"productId": "p", "quantity": 1, "unitPrice": "-0.01"}]},
        {"items": [{"productId": "p", "quantity": 1, "unitPrice": "0.001"}]},
        {"items": [{"productId": "p", "quantity": 1, "unitPrice": "NaN"}]},
        {"items": [{"productId": "p", "quantity": 1, "unitPrice": "1e400"}]},
        {"items": [{"productId": "", "quantity": 1, "unitPrice": "1.00"}]},
        {"items": [{"productId": "p\x00", "quantity": 1, "unitPrice": "1.00"}]},
        {"items": [{"productId": "p", "quantity": 1, "unitPrice": "1.00", "discount": 1}]},
        {"paymentMethod": ""},
        {"userId": "someone-else"},
    ],
)
def test_invalid_orders_are_422_and_reach_no_service(
    shop_client, shop_session, shop_downstream, as_buyer, change
):
    response = shop_client.post("/api/orders", json={**SEED_ORDER, **change}, headers=as_buyer)

    assert response.status_code == 422
    assert shop_downstream.inventory.calls == []
    assert shop_session.scalars(select(Order)).all() == []
