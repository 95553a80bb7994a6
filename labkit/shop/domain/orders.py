"""Placing an order: inventory and payment over HTTP, the order and its event in SQL.

The downstream contracts (JSON over HTTP; `labkit.shop.testing.fakes` serves both):

inventory, at ``settings.inventory_url``
    ``POST /check``   ``{items: [{productId, quantity}]}``
                      → 200 ``{allAvailable, items: [{productId, available}]}``
    ``POST /reserve`` ``{orderId, items: [{productId, quantity}]}``
                      → 200 ``{reserved: true}``, or 409 ``{error: "INSUFFICIENT_STOCK"}``
    ``POST /release`` ``{orderId}`` → 200 ``{released: true}`` (idempotent)
payment, at ``settings.payment_url``
    ``POST /payments`` ``{orderId, amount: "109.97", method}``, header
                      ``Idempotency-Key: <orderId>`` → 200
                      ``{transactionId, status: "APPROVED" | "DECLINED"}``

The saga, and why in this order:
1. check stock — unavailable: 409, nothing stored, payment never called;
2. store the order PENDING — before any side effect elsewhere, so a database outage
   is a 503 that leaves nothing reserved and nobody charged;
3. reserve stock — refused: order CANCELLED, 409;
4. take payment — approved: order CONFIRMED plus an ORDER_CREATED outbox row in one
   transaction, 201; declined: reservation released (the compensation), order
   PAYMENT_DECLINED, 402; unreachable: reservation released, order PAYMENT_FAILED, 503.
   The payment call carries the order id as idempotency key, so a retry by a
   reconciler cannot charge twice.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.data.models import Order, OrderItem, OrderStatus
from labkit.shop.domain.schemas import OrderCreate
from labkit.shop.infra.messaging import record_event
from labkit.shop.settings import ShopSettings

log = logging.getLogger(__name__)

CENT = Decimal("0.01")


class DownstreamError(RuntimeError):
    """A downstream service was unreachable, too slow, or answered outside its contract."""

    def __init__(self, service: str, problem: str) -> None:
        super().__init__(f"{service} service: {problem}")
        self.service = service


class Downstream:
    """HTTP clients for the inventory and payment services, with bounded timeouts."""

    def __init__(
        self, settings: ShopSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        timeout = httpx.Timeout(settings.downstream_timeout)
        self.inventory = httpx.Client(
            base_url=settings.inventory_url, timeout=timeout, transport=transport
        )
        self.payment = httpx.Client(
            base_url=settings.payment_url, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self.inventory.close()
        self.payment.close()

    def _post(
        self,
        client: httpx.Client,
        service: str,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        accept: tuple[int, ...] = (200,),
    ) -> tuple[int, dict[str, Any]]:
        try:
            response = client.post(path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise DownstreamError(service, f"no answer to POST {path} within the timeout") from None
        except httpx.TransportError as exc:
            raise DownstreamError(service, f"POST {path} failed: {exc!r}") from None
        if response.status_code not in accept:
            raise DownstreamError(service, f"POST {path} answered {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise DownstreamError(service, f"POST {path} answered non-JSON") from None
        if not isinstance(data, dict):
            raise DownstreamError(
                service, f"POST {path} answered {type(data).__name__}, not an object"
            )
        return response.status_code, data

    def check_stock(self, items: list[dict[str, Any]]) -> bool:
        _, data = self._post(self.inventory, "inventory", "/check", {"items": items})
        if not isinstance(data.get("allAvailable"), bool):
            raise DownstreamError("inventory", "/check answer has no boolean allAvailable")
        return data["allAvailable"]

    def reserve(self, order_id: uuid.UUID, items: list[dict[str, Any]]) -> bool:
        status, _ = self._post(
            self.inventory,
            "inventory",
            "/reserve",
            {"orderId": str(order_id), "items": items},
            accept=(200, 409),
        )
        return status == 200

    def release(self, order_id: uuid.UUID) -> None:
        """Best effort: a failed release is logged for a reconciler, not raised."""
        try:
            self._post(self.inventory, "inventory", "/release", {"orderId": str(order_id)})
        except DownstreamError as exc:
            log.error("reservation for order %s NOT released, reconcile by hand: %s", order_id, exc)

    def pay(self, order_id: uuid.UUID, amount: Decimal, method: str) -> tuple[str, str | None]:
        """(status, transaction id) — status APPROVED or DECLINED."""
        _, data = self._post(
            self.payment,
            "payment",
            "/payments",
            {"orderId": str(order_id), "amount": str(amount), "method": method},
            headers={"Idempotency-Key": str(order_id)},
        )
        status = data.get("status")
        if status not in ("APPROVED", "DECLINED"):
            raise DownstreamError("payment", f"unknown payment status {status!r}")
        transaction = data.get("transactionId")
        return status, str(transaction)[:100] if transaction is not None else None


class Outcome(enum.Enum):
    CONFIRMED = "CONFIRMED"
    INVENTORY_UNAVAILABLE = "INVENTORY_UNAVAILABLE"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"


@dataclass(frozen=True)
class PlacedOrder:
    outcome: Outcome
    order_id: uuid.UUID | None
    total_amount: Decimal


def order_total(request: OrderCreate) -> Decimal:
    """The exact sum of quantity × unit price, in cents (29.99×2 + 49.99 = 109.97)."""
    total = sum((item.unitPrice * item.quantity for item in request.items), Decimal(0))
    return total.quantize(CENT)


def _set_status(factory: sessionmaker[Session], order_id: uuid.UUID, status: OrderStatus) -> None:
    with factory() as session, session.begin():
        order = session.get_one(Order, order_id)
        order.status = status.value


def place_order(
    factory: sessionmaker[Session],
    downstream: Downstream,
    user_id: uuid.UUID,
    request: OrderCreate,
    order_events_destination: str,
) -> PlacedOrder:
    """Run the saga above. DownstreamError and database errors propagate (→ 503)."""
    items = [{"productId": i.productId, "quantity": i.quantity} for i in request.items]
    total = order_total(request)

    if not downstream.check_stock(items):
        return PlacedOrder(Outcome.INVENTORY_UNAVAILABLE, None, total)

    order_id = uuid.uuid4()
    with factory() as session, session.begin():
        session.add(
            Order(
                id=order_id,
                user_id=user_id,
                status=OrderStatus.PENDING.value,
                total_amount=total,
                payment_method=request.paymentMethod,
                items=[
                    OrderItem(product_id=i.productId, quantity=i.quantity, unit_price=i.unitPrice)
                    for i in request.items
                ],
            )
        )

    if not downstream.reserve(order_id, items):
        _set_status(factory, order_id, OrderStatus.CANCELLED)
        return PlacedOrder(Outcome.INVENTORY_UNAVAILABLE, order_id, total)

    try:
        status, transaction_id = downstream.pay(order_id, total, request.paymentMethod)
    except DownstreamError:
        downstream.release(order_id)
        _set_status(factory, order_id, OrderStatus.PAYMENT_FAILED)
        raise

    if status == "DECLINED":
        downstream.release(order_id)
        _set_status(factory, order_id, OrderStatus.PAYMENT_DECLINED)
        return PlacedOrder(Outcome.PAYMENT_DECLINED, order_id, total)

    with factory() as session, session.begin():
        order = session.get_one(Order, order_id)
        order.status = OrderStatus.CONFIRMED.value
        order.payment_transaction_id = transaction_id
        record_event(
            session,
            aggregate="order",
            aggregate_id=order_id,
            event_type="ORDER_CREATED",
            destination=order_events_destination,
            payload={
                "eventType": "ORDER_CREATED",
                "orderId": str(order_id),
                "userId": str(user_id),
                "totalAmount": str(total),
            },
        )
    return PlacedOrder(Outcome.CONFIRMED, order_id, total)
