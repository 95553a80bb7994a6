"""POST /api/orders: a saga over real HTTP services, with money kept exact."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from labkit.services import free_port
from labkit.shop.app import UNAVAILABLE_BODY
from labkit.shop.data import Order, OrderStatus, OutboxEvent
from labkit.shop.domain import reconcile_orders
from labkit.shop.testing import add_user, auth_header, client_for, database_outage
from labkit.waiting import wait_until

SEED_ORDER = {
    "items": [
        {"productId": "product-1", "quantity": 2, "unitPrice": "29.99"},
        {"productId": "product-2", "quantity": 1, "unitPrice": "49.99"},
    ],
    "paymentMethod": "CREDIT_CARD",
}


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


def test_payment_timeout_is_503_and_leaves_the_order_pending_with_its_stock(
    shop_client, shop_app, shop_session, shop_settings, shop_downstream, as_buyer
):
    """No answer from payment is not "not paid": the fake takes the payment after the shop
    stopped waiting. The order stays PENDING holding its stock, and the reconciler learns
    the truth by asking again with the same key: the one charge, confirmed."""
    shop_downstream.payment.delay = shop_settings.downstream_timeout + 0.5

    response = shop_client.post("/api/orders", json=SEED_ORDER, headers=as_buyer)

    assert response.status_code == 503
    assert response.json() == UNAVAILABLE_BODY
    order = shop_session.scalars(select(Order)).one()
    assert order.status == OrderStatus.PENDING
    assert shop_downstream.inventory.calls_to("/release") == []
    assert list(shop_downstream.inventory.reservations) == [str(order.id)]
    assert shop_session.scalars(select(OutboxEvent)).all() == []
    charged = wait_until(
        lambda: shop_downstream.payment.payments.get(str(order.id)),
        timeout=shop_downstream.payment.delay + 5,
        message="the slow payment service took the payment",
    )

    shop_downstream.payment.delay = 0
    shop = shop_app.state.shop
    report = reconcile_orders(shop.sessions, shop.downstream, shop_settings, older_than=0)

    assert report == {"CONFIRMED": 1}
    shop_session.expire_all()
    assert shop_session.get(Order, order.id).status == OrderStatus.CONFIRMED
    assert list(shop_downstream.payment.payments.values()) == [charged]  # asked twice
    assert len(shop_downstream.payment.calls_to("/payments")) == 2
    assert shop_session.get(Order, order.id).payment_transaction_id == charged["transactionId"]
    assert len(shop_session.scalars(select(OutboxEvent)).all()) == 1


def test_a_retry_with_the_same_idempotency_key_is_the_same_order_charged_once(
    shop_client, shop_session, shop_downstream, as_buyer
):
    headers = {**as_buyer, "Idempotency-Key": "7b0e8c1e-checkout-1"}

    first = shop_client.post("/api/orders", json=SEED_ORDER, headers=headers)
    again = shop_client.post("/api/orders", json=SEED_ORDER, headers=headers)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert [str(o.id) for o in shop_session.scalars(select(Order))] == [first.json()["orderId"]]
    assert len(shop_downstream.payment.payments) == 1
    assert len(shop_downstream.payment.calls_to("/payments")) == 1  # answered from the row
    assert len(shop_downstream.inventory.calls_to("/reserve")) == 1
    assert len(shop_session.scalars(select(OutboxEvent)).all()) == 1


def test_a_retried_decline_is_the_same_402_and_no_second_payment(
    shop_client, shop_downstream, as_buyer
):
    shop_downstream.payment.decline = True
    headers = {**as_buyer, "Idempotency-Key": "declined-once"}

    first = shop_client.post("/api/orders", json=SEED_ORDER, headers=headers)
    again = shop_client.post("/api/orders", json=SEED_ORDER, headers=headers)

    assert (first.status_code, again.status_code) == (402, 402)
    assert again.json()["orderId"] == first.json()["orderId"]
    assert len(shop_downstream.payment.calls_to("/payments")) == 1
    assert len(shop_downstream.inventory.calls_to("/release")) == 1


def test_an_idempotency_key_reused_for_another_order_is_409(
    shop_client, shop_session, shop_downstream, as_buyer
):
    headers = {**as_buyer, "Idempotency-Key": "basket-42"}
    first = shop_client.post("/api/orders", json=SEED_ORDER, headers=headers)
    other = {**SEED_ORDER, "paymentMethod": "PAYPAL"}

    response = shop_client.post("/api/orders", json=other, headers=headers)

    assert response.status_code == 409
    body = response.json()
    assert (body["error"], body["orderId"]) == ("IDEMPOTENCY_KEY_REUSED", first.json()["orderId"])
    assert "basket-42" in body["message"] and "new key" in body["message"]
    assert len(shop_session.scalars(select(Order)).all()) == 1
    assert len(shop_downstream.payment.calls_to("/payments")) == 1


def test_two_customers_with_the_same_key_place_two_orders(
    shop_client, shop_session, shop_settings, shop_downstream, as_buyer
):
    other = add_user(shop_session, email="other@example.com", name="Other")
    key = {"Idempotency-Key": "cart-1"}

    mine = shop_client.post("/api/orders", json=SEED_ORDER, headers={**as_buyer, **key})
    theirs = shop_client.post(
        "/api/orders", json=SEED_ORDER, headers={**auth_header(shop_settings, other.id), **key}
    )

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["orderId"] != theirs.json()["orderId"]
    assert len(shop_downstream.payment.payments) == 2


@pytest.mark.parametrize("key", ["", "has space", "k" * 201])
def test_a_malformed_idempotency_key_is_422_and_reaches_no_service(
    shop_client, shop_downstream, as_buyer, key
):
    response = shop_client.post(
        "/api/orders", json=SEED_ORDER, headers={**as_buyer, "Idempotency-Key": key}
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert shop_downstream.inventory.calls == []


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
