"""The order saga across services, for lesson 05: listen to the shop's downstream calls,
draw them, and the broken downstream clients its tests must catch.

    >>> from labkit.shop.testing.microservices import listen_to_downstream, sequence_diagram
    >>> calls = listen_to_downstream(shop)          # every call the shop makes, in order
    >>> client.post("/api/orders", json=order, headers=as_buyer)
    >>> sequence_diagram(ax, "all goes well", calls, "201 CONFIRMED", depth=5)

The broken clients are what a refactor or a well-meant "resilience" change turns the
shop's `Downstream` into: `DownstreamWithATypo` posts releases to the wrong path,
`RetryingDownstream` retries a slow inventory, `OutOfStockWhenSlow` takes "no answer"
for "out of stock". `with_downstream` puts one into a shop app.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx

from labkit.shop.domain.orders import Downstream, DownstreamError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from matplotlib.axes import Axes

    from labkit.shop.app.container import Shop

# The fields of a downstream answer worth drawing: the saga decides on these.
ANSWER_FIELDS = frozenset({"allAvailable", "reserved", "released", "status", "error"})
LANES = {"shop": 0, "inventory": 1, "payment": 2}

log = logging.getLogger("labkit.shop.domain.orders")


def listen_to_downstream(shop: Shop) -> list[dict[str, Any]]:
    """Record every call the shop makes to inventory and payment, in order, with the answer.

    httpx clients call their *event hooks* with every response: the shop's two downstream
    clients get one that appends ``{"service", "request", "status", "answer"}`` to the list
    returned (clear it between scenarios). The hooks stay until the shop's clients close.
    """
    calls: list[dict[str, Any]] = []

    def hook_for(service: str) -> Any:
        def record(response: httpx.Response) -> None:
            response.read()
            answer = {k: v for k, v in response.json().items() if k in ANSWER_FIELDS}
            calls.append({"service": service, "request": response.request.url.path,
                          "status": response.status_code, "answer": answer})
        return record

    shop.downstream.inventory.event_hooks = {"response": [hook_for("inventory")]}
    shop.downstream.payment.event_hooks = {"response": [hook_for("payment")]}
    return calls


def sequence_diagram(
    ax: Axes, title: str, calls: list[dict[str, Any]], outcome: str, depth: int
) -> None:
    """Lifelines for the shop and its two services; one arrow per request, one dashed arrow
    per answer (its status and `ANSWER_FIELDS`), then what the client got (`outcome`).
    `depth` is the number of rows to draw: the same for diagrams shown side by side."""
    for name, x in LANES.items():
        ax.plot([x, x], [0, -depth], color="0.75", lw=1, zorder=0)
        ax.text(x, 0.25, name, ha="center", weight="bold")
    for row, call in enumerate(calls, start=1):
        x = LANES[call["service"]]
        answer = ", ".join(f"{k}={v}" for k, v in call["answer"].items())
        ax.annotate("", xy=(x, -row + 0.15), xytext=(0, -row + 0.15),
                    arrowprops={"arrowstyle": "->", "color": "tab:blue"})
        ax.text(x / 2, -row + 0.22, f"POST {call['request']}", ha="center", fontsize=8)
        ax.annotate("", xy=(0, -row - 0.2), xytext=(x, -row - 0.2),
                    arrowprops={"arrowstyle": "->", "color": "0.4", "linestyle": "--"})
        ax.text(x / 2, -row - 0.13, f"{call['status']} {answer}",
                ha="center", fontsize=7, color="0.3")
    ax.text(0, -depth + 0.1, f"→ client: {outcome}", fontsize=9, weight="bold")
    ax.set(title=title, xlim=(-0.3, 2.4), ylim=(-depth - 0.2, 0.6))
    ax.axis("off")


def slow_inventory_is_an_error(
    downstream: Downstream, items: list[dict[str, Any]]
) -> tuple[bool, float]:
    """Did ``downstream.check_stock(items)`` raise DownstreamError, and after how many seconds?"""
    started = time.monotonic()
    try:
        downstream.check_stock(items)
        raised = False
    except DownstreamError:
        raised = True
    return raised, time.monotonic() - started


class DownstreamWithATypo(Downstream):
    """The shop's downstream client after a refactor: releases go to ``/releases``, where
    the inventory's contract says ``/release``; the failure is logged, as the shop's is."""

    def release(self, order_id: uuid.UUID) -> None:
        response = self.inventory.post("/releases", json={"orderId": str(order_id)})
        if response.status_code != 200:
            log.error(
                "reservation for order %s NOT released, reconcile by hand: POST /releases "
                "answered %s", order_id, response.status_code,
            )


class RetryingDownstream(Downstream):
    """Broken: retries a slow inventory twice more — three timeouts for one request."""

    def check_stock(self, items: list[dict[str, Any]]) -> bool:
        for attempt in (1, 2, 3):
            try:
                return super().check_stock(items)
            except DownstreamError:
                if attempt == 3:
                    raise
        raise AssertionError("unreachable")


class OutOfStockWhenSlow(Downstream):
    """Broken: takes "no answer" for "out of stock" — a 409 that blames the stock."""

    def check_stock(self, items: list[dict[str, Any]]) -> bool:
        try:
            return super().check_stock(items)
        except DownstreamError:
            return False


def with_downstream(app: FastAPI, kind: type[Downstream]) -> FastAPI:
    """`app`, its shop now calling inventory and payment through a `kind` client."""
    shop = app.state.shop
    shop.downstream.close()
    shop.downstream = kind(shop.settings)
    return app
