"""Fake inventory and payment services, served over real HTTP on 127.0.0.1.

Unlike an in-process mock (respx), these answer on a real socket: the shop's httpx
client really connects, really times out, really reads JSON. Each fake records the
calls it got, and can be told to be slow or broken.

    >>> with FakeDownstream() as fakes:
    ...     fakes.inventory.stock["SKU-1"] = 0          # out of stock
    ...     fakes.payment.decline = True                # every payment declined
    ...     fakes.payment.delay = 5.0                   # or: answer after 5 s
    ...     fakes.payment.before_reply = lambda call, answer: frozen("postgres")  # just then
    ...     app = create_app(settings_from_services(fault_layer=True, **fakes.settings()))
    ...     ...
    ...     fakes.payment.calls                         # what the shop sent

The contracts are in `labkit.shop.domain.orders`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Answer = tuple[int, dict[str, Any]]


class _KeepAliveServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its open connections, to close them on stop.

    The fakes speak HTTP/1.1, so a client keeps its connection between calls, as it
    would with a real service: with HTTP/1.0 each of an order's three calls paid for a
    new TCP connection, which the shop's CPU per order showed (benchmarks/shop_speed.py
    --paths). Without this, a connection kept open would outlive `stop()` and still be
    answered: a stopped fake must be unreachable.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on every client: each connection's thread then sees the end and exits."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed by its client meanwhile


@dataclass(frozen=True)
class Call:
    path: str
    body: Any
    headers: dict[str, str]


class FakeService:
    """A JSON-over-HTTP service in a daemon thread; subclasses implement `answer`."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.delay = 0.0  # seconds to wait before answering: a slow network or server
        self.fail_status: int | None = None  # answer every request with this status
        # Called with each call and its answer once the fake has acted on it (a payment
        # taken, stock reserved), before the answer is sent: a fault at exactly the moment
        # the caller's side effect is done and its reply not yet read.
        self.before_reply: Callable[[Call, Answer], None] | None = None
        self.lock = threading.Lock()
        self._server: _KeepAliveServer | None = None

    # -- what a test reads and sets ------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(
                f"the fake {self.name} service is not started: use start() or `with`"
            )
        return f"http://127.0.0.1:{self._server.server_port}"

    def calls_to(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]

    def reset(self) -> None:
        """Forget calls and faults (subclasses also restore their data)."""
        with self.lock:
            self.calls.clear()
            self.delay = 0.0
            self.fail_status = None
            self.before_reply = None

    def answer(self, path: str, body: Any, headers: dict[str, str]) -> Answer:
        raise NotImplementedError

    # -- the server ----------------------------------------------------------------

    def start(self) -> Self:
        service = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive; every answer below carries its Content-Length.
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY: an answer goes out as two writes (headers, then body), and on a
            # kept connection Nagle's algorithm held the body until the client's delayed
            # ACK of the headers, 40 ms later (a saga of 3 calls took 105 ms, not 21).
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                if "Transfer-Encoding" in self.headers:
                    # A body whose length this fake does not read (chunked): it is taken
                    # as empty, as ever, and the connection closed after the answer, so
                    # the unread body is never parsed as the next request.
                    self.close_connection = True
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                headers = {k.lower(): v for k, v in self.headers.items()}
                call = Call(self.path, body, headers)
                with service.lock:
                    service.calls.append(call)
                    delay, fail = service.delay, service.fail_status
                    before_reply = service.before_reply
                if delay:
                    time.sleep(delay)
                if fail is not None:
                    status, reply = fail, {"error": f"{service.name} is failing on purpose"}
                elif not isinstance(body, dict):
                    status, reply = 400, {"error": "expected a JSON object"}
                else:
                    with service.lock:
                        status, reply = service.answer(self.path, body, headers)
                if before_reply is not None:
                    before_reply(call, (status, reply))
                payload = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up waiting (a timeout test): nothing to answer, and
                    # nothing more will come on this connection.
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean; `calls` is the record

        self._server = _KeepAliveServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"fake-{self.name}", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _items(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [(str(i.get("productId")), int(i.get("quantity", 0))) for i in body.get("items") or []]


class FakeInventory(FakeService):
    """Stock per product (`default_stock` for any product not listed) and reservations."""

    name = "inventory"

    def __init__(self, default_stock: int = 100) -> None:
        super().__init__()
        self.initial_stock = default_stock
        self.default_stock = default_stock
        self.stock: dict[str, int] = {}
        self.reservations: dict[str, list[tuple[str, int]]] = {}

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.default_stock = self.initial_stock
            self.stock.clear()
            self.reservations.clear()

    def _available(self, product: str) -> int:
        return self.stock.get(product, self.default_stock)

    def answer(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        items = _items(body)
        if path == "/check":
            report = [{"productId": p, "available": self._available(p) >= q} for p, q in items]
            return 200, {"allAvailable": all(r["available"] for r in report), "items": report}
        if path == "/reserve":
            if str(body.get("orderId")) in self.reservations:
                return 200, {"reserved": True}  # idempotent: this order holds its stock
            if not all(self._available(p) >= q for p, q in items):
                return 409, {"error": "INSUFFICIENT_STOCK"}
            for p, q in items:
                self.stock[p] = self._available(p) - q
            self.reservations[str(body.get("orderId"))] = items
            return 200, {"reserved": True}
        if path == "/release":
            for p, q in self.reservations.pop(str(body.get("orderId")), []):
                self.stock[p] = self._available(p) + q
            return 200, {"released": True}
        return 404, {"error": f"no route {path}"}


class FakePayment(FakeService):
    """Approves every payment unless `decline` is set; idempotent per Idempotency-Key."""

    name = "payment"

    def __init__(self) -> None:
        super().__init__()
        self.decline = False
        self.payments: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.decline = False
            self.payments.clear()

    def answer(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        if path != "/payments":
            return 404, {"error": f"no route {path}"}
        key = headers.get("idempotency-key") or uuid.uuid4().hex
        if key not in self.payments:
            self.payments[key] = {
                "transactionId": f"txn-{uuid.uuid4().hex[:12]}",
                "status": "DECLINED" if self.decline else "APPROVED",
            }
        return 200, self.payments[key]


@dataclass
class FakeDownstream:
    """Both fakes together, started and stopped as one."""

    inventory: FakeInventory = field(default_factory=FakeInventory)
    payment: FakePayment = field(default_factory=FakePayment)

    def start(self) -> Self:
        self.inventory.start()
        self.payment.start()
        return self

    def stop(self) -> None:
        self.inventory.stop()
        self.payment.stop()

    def reset(self) -> None:
        self.inventory.reset()
        self.payment.reset()

    def settings(self) -> dict[str, Any]:
        """The ShopSettings fields that point the shop at these fakes."""
        return {"inventory_url": self.inventory.url, "payment_url": self.payment.url}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
