"""A request's teardown never turns an answer into a dropped connection (issue #14).

The session a request used is closed after its handler: closing rolls back what the
handler left open. If PostgreSQL froze meanwhile, that ROLLBACK times out. The issue saw
uvicorn log "Exception in ASGI application" and drop the keep-alive connection, so the
client's *next* request on it failed. Served over real HTTP here (uvicorn, a socket the
client keeps open), because an in-process TestClient has no connection to lose.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from labkit.shop.app import ApiError, SessionDep, ShopServer
from labkit.shop.testing.outages import frozen
from labkit.shop.testing.routes import replace_route
from labkit.waiting import wait_until


class Recorded(logging.Handler):
    """Every record a logger emits (uvicorn's loggers do not propagate to caplog's root)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


ESCAPED = "Exception in ASGI application"  # uvicorn's log line for an error the app let out


@contextmanager
def recorded(*names: str) -> Iterator[Recorded]:
    """Records of the loggers `names` for the block. Attach it after uvicorn has
    configured its logging (`uvicorn.Config`), which replaces its loggers' handlers."""
    handler = Recorded()
    for name in names:
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)


def query_then_outage_then(status: int, outage: ExitStack):
    """A handler that opens a transaction, then PostgreSQL freezes, then it answers
    `status` (a 503 for another dependency, or a 200): either way its session's close
    must roll back on a frozen server, and times out.

    FastAPI closes the session before it sends an error (the close's failure then is the
    503 itself) and after it sends a success: the second case is where a failing close
    once escaped the app, with the response already on its way."""

    def handler(session: SessionDep) -> dict[str, str]:
        session.execute(text("SELECT 1"))  # a transaction the teardown will roll back
        # paused if labkit runs it, else frozen in the fault layer (until outage.close())
        outage.enter_context(frozen("postgres"))
        if status == 503:
            raise ApiError(503, "PAYMENT_UNAVAILABLE", "a dependency is down")
        return {"status": "ok"}

    return handler


@pytest.mark.parametrize("status", [503, 200])
def test_the_next_request_on_a_kept_alive_connection_is_answered(
    make_shop_app, shop_clean, shop_settings, status
):
    app = make_shop_app()  # a pool of its own: the shared app's is left alone
    outage = ExitStack()
    replace_route(app, "GET", "/outage-in-request", query_then_outage_then(status, outage))
    with ShopServer(app) as server, recorded("uvicorn.error") as server_log:
        address = urlsplit(server.url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            connection.request("GET", "/outage-in-request")
            first = connection.getresponse()
            first.read()
            socket_after_first = connection.sock
            # Frozen until the teardown is over (its connection back in the pool or
            # thrown away), whenever FastAPI runs it.
            wait_until(
                lambda: app.state.shop.engine.pool.checkedout() == 0,
                timeout=shop_settings.db_io_timeout + 10,
                message="the request's session was closed, or failed to be",
            )
        finally:
            outage.close()
        # The same socket: http.client reconnects on its own only after a
        # "Connection: close", which would hide a connection the server dropped.
        assert first.status == status
        assert first.getheader("connection", "").lower() != "close"
        connection.request("GET", "/health")
        second = connection.getresponse()
        body = second.read()
        assert connection.sock is socket_after_first
        connection.close()

    assert (second.status, body) == (200, b'{"status":"ok"}')
    assert [m for m in server_log.messages if ESCAPED in m] == []
