"""The order saga after an outage (issue #14): never charged twice, never stuck PENDING.

PostgreSQL is frozen for real (`outages.frozen`: the `labkit.faults` proxy the shop
reaches it through stops moving bytes, on every backend) at the worst moment, between
the payment's approval and the order's confirmation; the client retries as a client
would; the reconciler completes what the outage left.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import ExitStack
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from labkit.shop.app import UNAVAILABLE_BODY, ShopServer
from labkit.shop.data import Order, OrderStatus, OutboxEvent
from labkit.shop.domain import reconcile_orders
from labkit.shop.testing import auth_header
from labkit.shop.testing.outages import frozen
from labkit.waiting import wait_until

SEED_ORDER = {
    "items": [
        {"productId": "product-1", "quantity": 2, "unitPrice": "29.99"},
        {"productId": "product-2", "quantity": 1, "unitPrice": "49.99"},
    ],
    "paymentMethod": "CREDIT_CARD",
}
RESERVED = [("product-1", 2), ("product-2", 1)]


@pytest.fixture
def shop(shop_app):
    return shop_app.state.shop


def order_created_events(session) -> list[OutboxEvent]:
    session.expire_all()
    return list(
        session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == "ORDER_CREATED"))
    )


def stuck_pending(shop_client, shop_downstream, headers, count: int = 1) -> list[str]:
    """`count` orders left PENDING by a payment service answering 500 (outcome unknown)."""
    shop_downstream.payment.fail_status = 500
    ids = []
    for n in range(count):
        response = shop_client.post(
            "/api/orders", json=SEED_ORDER, headers={**headers, "Idempotency-Key": f"stuck-{n}"}
        )
        assert response.status_code == 503
        ids.append(str(shop_downstream.inventory.calls_to("/reserve")[-1].body["orderId"]))
    shop_downstream.payment.fail_status = None
    return ids


def test_a_freeze_between_payment_and_confirmation_charges_once_and_confirms(
    shop_client, shop, shop_settings, shop_session, shop_downstream, as_buyer
):
    """The issue's scenario: payment approved, PostgreSQL frozen before the UPDATE to
    CONFIRMED; 503; the client retries with its Idempotency-Key, during the outage and
    after; the reconciler runs. Before the fix the retry was a new order, charged again."""
    freeze = ExitStack()  # on from the payment's approval until the `finally`

    def freeze_once_approved(call, answer) -> None:
        shop_downstream.payment.before_reply = None
        freeze.enter_context(frozen("postgres"))

    shop_downstream.payment.before_reply = freeze_once_approved
    headers = {**as_buyer, "Idempotency-Key": "checkout-5e1d"}
    try:
        first = shop_client.post("/api/orders", json=SEED_ORDER, headers=headers)
        during = shop_client.post("/api/orders", json=SEED_ORDER, headers=headers)
    finally:
        freeze.close()
    after = shop_client.post("/api/orders", json=SEED_ORDER, headers=headers)

    assert len(shop_downstream.payment.payments) == 1, "a retry was charged again"
    assert (first.status_code, first.json()) == (503, UNAVAILABLE_BODY)
    assert during.status_code == 503
    assert (after.status_code, after.json()["error"]) == (409, "ORDER_IN_PROGRESS")
    assert after.headers["Retry-After"] == "5"
    order_id = after.json()["orderId"]
    assert order_created_events(shop_session) == []

    report = reconcile_orders(shop.sessions, shop.downstream, shop_settings, older_than=0)
    done = shop_client.post("/api/orders", json=SEED_ORDER, headers=headers)

    assert report == {"CONFIRMED": 1}
    assert (done.status_code, done.json()["orderId"]) == (201, order_id)
    assert done.json()["status"] == "CONFIRMED"
    # charged exactly once, by the payment service's own ledger
    ((key, payment),) = shop_downstream.payment.payments.items()
    assert (key, payment["status"]) == (order_id, "APPROVED")
    order = shop_session.get(Order, uuid.UUID(order_id))
    assert order.status == OrderStatus.CONFIRMED
    assert order.payment_transaction_id == payment["transactionId"]
    assert [str(o.id) for o in shop_session.scalars(select(Order))] == [order_id]
    # stock reserved once, and still held by the confirmed order
    assert shop_downstream.inventory.reservations == {order_id: RESERVED}
    assert shop_downstream.inventory.stock == {"product-1": 98, "product-2": 99}
    (event,) = order_created_events(shop_session)
    assert event.payload["orderId"] == order_id

    assert reconcile_orders(shop.sessions, shop.downstream, shop_settings, older_than=0) == {}
    assert len(order_created_events(shop_session)) == 1


def test_a_retry_of_an_order_stuck_past_the_reconcile_age_completes_it(
    shop_client, shop_settings, shop_session, shop_downstream, as_buyer
):
    (order_id,) = stuck_pending(shop_client, shop_downstream, as_buyer)
    stuck_for = timedelta(seconds=shop_settings.order_reconcile_after_seconds + 1)
    shop_session.execute(update(Order).values(updated_at=func.now() - stuck_for))
    shop_session.commit()

    response = shop_client.post(
        "/api/orders", json=SEED_ORDER, headers={**as_buyer, "Idempotency-Key": "stuck-0"}
    )

    assert (response.status_code, response.json()["orderId"]) == (201, order_id)
    assert len(shop_downstream.payment.payments) == 1
    assert len(order_created_events(shop_session)) == 1


def test_the_serving_shop_completes_a_stuck_order_on_its_own(
    make_shop_app, shop_clean, shop_session, shop_downstream, buyer
):
    """No test code calls the reconciler: the served shop's background job does."""
    app = make_shop_app(order_reconcile_every_seconds=0.2, order_reconcile_after_seconds=0.5)
    headers = auth_header(app.state.shop.settings, buyer.id)
    with ShopServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        (order_id,) = stuck_pending(client, shop_downstream, headers)

        def confirmed() -> bool:
            shop_session.expire_all()
            return shop_session.get(Order, uuid.UUID(order_id)).status == OrderStatus.CONFIRMED

        wait_until(confirmed, timeout=30, message="the serving shop's reconciler confirmed it")
    assert len(shop_downstream.payment.payments) == 1
    assert len(order_created_events(shop_session)) == 1


def test_the_reconciler_leaves_young_orders_to_their_saga(
    shop_client, shop, shop_settings, shop_session, shop_downstream, as_buyer
):
    (order_id,) = stuck_pending(shop_client, shop_downstream, as_buyer)

    assert reconcile_orders(shop.sessions, shop.downstream, shop_settings) == {}
    shop_session.expire_all()
    assert shop_session.get(Order, uuid.UUID(order_id)).status == OrderStatus.PENDING


def test_a_payment_still_down_leaves_the_order_pending_for_the_next_run(
    shop_client, shop, shop_settings, shop_session, shop_downstream, as_buyer
):
    (order_id,) = stuck_pending(shop_client, shop_downstream, as_buyer)
    shop_downstream.payment.fail_status = 500

    report = reconcile_orders(shop.sessions, shop.downstream, shop_settings, older_than=0)

    assert report == {"unresolved": 1}
    shop_session.expire_all()
    assert shop_session.get(Order, uuid.UUID(order_id)).status == OrderStatus.PENDING
    assert shop_downstream.inventory.reservations == {order_id: RESERVED}


def test_a_reconciled_decline_releases_the_stock(
    shop_client, shop, shop_settings, shop_session, shop_downstream, as_buyer
):
    (order_id,) = stuck_pending(shop_client, shop_downstream, as_buyer)
    shop_downstream.payment.decline = True

    report = reconcile_orders(shop.sessions, shop.downstream, shop_settings, older_than=0)

    assert report == {"PAYMENT_DECLINED": 1}
    shop_session.expire_all()
    assert shop_session.get(Order, uuid.UUID(order_id)).status == OrderStatus.PAYMENT_DECLINED
    assert shop_downstream.inventory.reservations == {}
    assert shop_downstream.inventory.stock == {"product-1": 100, "product-2": 100}
    assert order_created_events(shop_session) == []


def test_two_reconcilers_at_once_drive_each_order_once(
    shop_client, shop, shop_settings, shop_session, shop_downstream, as_buyer
):
    """Each order is locked (SKIP LOCKED) while one reconciler drives it: the other skips
    it. A slow payment service keeps both reconcilers busy at the same time."""
    order_ids = stuck_pending(shop_client, shop_downstream, as_buyer, count=4)
    shop_downstream.payment.calls.clear()
    shop_downstream.payment.delay = 0.3
    reports: list[dict[str, int]] = []

    def reconciler() -> None:
        reports.append(
            reconcile_orders(shop.sessions, shop.downstream, shop_settings, older_than=0)
        )

    runs = [threading.Thread(target=reconciler) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=60)

    assert len(reports) == 2, "a reconciler did not finish"
    assert sum(r.get("CONFIRMED", 0) for r in reports) == 4
    assert sum(r.get("skipped", 0) for r in reports) + 4 == sum(sum(r.values()) for r in reports)
    paid = [c.headers["idempotency-key"] for c in shop_downstream.payment.calls_to("/payments")]
    assert sorted(paid) == sorted(order_ids), "an order was driven by both reconcilers"
    events = order_created_events(shop_session)
    assert sorted(e.payload["orderId"] for e in events) == sorted(order_ids)


def test_two_requests_with_one_key_at_once_place_one_order(
    shop_client, shop_session, shop_downstream, as_buyer
):
    """A double click: both requests find no order, both check the stock (slowly), both
    try to store it; one stores it and pays, the other meets it and says so."""
    shop_downstream.inventory.delay = 0.3
    headers = {**as_buyer, "Idempotency-Key": "double-click"}
    statuses: list[int] = []

    def place() -> None:
        statuses.append(
            shop_client.post("/api/orders", json=SEED_ORDER, headers=headers).status_code
        )

    clicks = [threading.Thread(target=place) for _ in range(2)]
    for click in clicks:
        click.start()
    for click in clicks:
        click.join(timeout=60)

    assert len(shop_downstream.inventory.calls_to("/check")) == 2  # both got that far
    assert sorted(statuses) in ([201, 201], [201, 409]), statuses
    assert len(shop_session.scalars(select(Order)).all()) == 1
    assert len(shop_downstream.payment.payments) == 1
    assert len(shop_downstream.payment.calls_to("/payments")) == 1
    assert len(order_created_events(shop_session)) == 1
