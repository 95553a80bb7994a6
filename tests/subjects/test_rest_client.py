"""ExternalUserClient against a real HTTP server: timeouts, retries, circuit breaker.

The server is pytest-httpserver's, on a real socket: the client's timeouts, its
connection handling and its retries all happen for real, and the server's request
log says exactly how many requests reached it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import respx
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from labkit.subjects.rest_client import (
    CircuitOpenError,
    ExternalServiceUnavailable,
    ExternalUser,
    ExternalUserClient,
    RequestRejected,
    UserNotFound,
    is_transient,
)
from labkit.waiting import wait_until

USER = {"id": "123", "name": "External User", "status": "active"}


@pytest.fixture(scope="module")
def user_api() -> Iterator[HTTPServer]:
    # Threaded, so a handler that hangs does not hold up the requests after it.
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(user_api: HTTPServer) -> Iterator[HTTPServer]:
    """The user API with no handlers and an empty request log."""
    user_api.clear()
    yield user_api
    user_api.clear()


class HangingHandler:
    """A handler that answers only when released; it counts requests as they arrive.

    The server logs a request when its answer is sent, so for hung requests the
    arrival count is the one to assert on.
    """

    def __init__(self) -> None:
        self.arrived = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._release = threading.Event()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.arrived += 1
            self._in_flight += 1
        try:
            self._release.wait(timeout=5)
            return Response("too late", status=200)
        finally:
            with self._lock:
                self._in_flight -= 1

    def release_and_drain(self) -> None:
        self._release.set()
        wait_until(lambda: self._in_flight == 0, timeout=5, message="hung handlers to finish")


@pytest.fixture
def hanging(api: HTTPServer) -> Iterator[HangingHandler]:
    """A hanging handler, released and drained before the next test sees the server."""
    handler = HangingHandler()
    yield handler
    handler.release_and_drain()


def requests_seen(server: HTTPServer) -> int:
    return len(server.log)


def test_get_user_returns_the_user(api: HTTPServer) -> None:
    api.expect_request("/users/123", method="GET").respond_with_json(USER)

    with ExternalUserClient(api.url_for("/")) as client:
        assert client.get_user(123) == ExternalUser(id="123", name="External User", status="active")

    assert requests_seen(api) == 1


def test_404_is_user_not_found_and_not_retried(api: HTTPServer) -> None:
    api.expect_request("/users/404").respond_with_json({"error": "User not found"}, status=404)

    with ExternalUserClient(api.url_for("/"), retries=3) as client:
        with pytest.raises(UserNotFound, match="404"):
            client.get_user(404)
        # A missing user says nothing about the service's health.
        assert client.circuit_state == "closed"

    assert requests_seen(api) == 1


def test_other_4xx_is_rejected_without_retry(api: HTTPServer) -> None:
    api.expect_request("/users/bad id").respond_with_json({"error": "bad id"}, status=400)

    client = ExternalUserClient(api.url_for("/"), retries=3)
    with client, pytest.raises(RequestRejected, match="400"):
        client.get_user("bad id")

    assert requests_seen(api) == 1


def test_timeout_fires_at_the_configured_time(api: HTTPServer, hanging: HangingHandler) -> None:
    api.expect_request("/users/123").respond_with_handler(hanging)

    with ExternalUserClient(api.url_for("/"), timeout=0.3, retries=0) as client:
        began = time.perf_counter()
        with pytest.raises(ExternalServiceUnavailable, match="nothing received for 0.3s"):
            client.get_user(123)
        elapsed = time.perf_counter() - began

    # Bounded on both sides: not instant (the server really was waited for), not hanging.
    assert 0.3 <= elapsed < 1.5


def test_timeouts_are_retried_then_reported(api: HTTPServer, hanging: HangingHandler) -> None:
    api.expect_request("/users/123").respond_with_handler(hanging)

    client = ExternalUserClient(api.url_for("/"), timeout=0.2, retries=2, backoff=0.01)
    with client, pytest.raises(ExternalServiceUnavailable, match="nothing received"):
        client.get_user(123)

    assert hanging.arrived == 3


def test_503_is_retried_until_it_succeeds(api: HTTPServer) -> None:
    api.expect_ordered_request("/users/123").respond_with_data("busy", status=503)
    api.expect_ordered_request("/users/123").respond_with_data("bad gateway", status=502)
    api.expect_ordered_request("/users/123").respond_with_json(USER)

    with ExternalUserClient(api.url_for("/"), retries=2, backoff=0.01) as client:
        assert client.get_user(123).name == "External User"

    assert [response.status_code for _, response in api.log] == [503, 502, 200]


def test_500_is_not_retried(api: HTTPServer) -> None:
    # A 500 is a bug on their side, not a blip: a retry would most likely fail the same way.
    api.expect_request("/users/123").respond_with_data("boom", status=500)

    client = ExternalUserClient(api.url_for("/"), retries=3)
    with client, pytest.raises(ExternalServiceUnavailable, match="500"):
        client.get_user(123)

    assert requests_seen(api) == 1


def test_a_trickling_answer_outlasts_the_timeout_which_bounds_each_read(api: HTTPServer) -> None:
    body = b'{"id": "123", "name": "Slow"}'

    def trickle(request: Request) -> Response:
        def pieces() -> Iterator[bytes]:
            for start in range(0, len(body), 6):
                time.sleep(0.08)
                yield body[start : start + 6]

        return Response(pieces(), content_type="application/json")

    api.expect_request("/users/123").respond_with_handler(trickle)
    with ExternalUserClient(api.url_for("/"), timeout=0.3, retries=0) as client:
        began = time.perf_counter()
        assert client.get_user(123).name == "Slow"
        elapsed = time.perf_counter() - began

    # five waits of 0.08 s, none over the 0.3 s timeout; together well past it
    assert elapsed > 0.3, f"the whole answer came in {elapsed:.2f}s"


def test_backoff_doubles_from_backoff_up_to_max_backoff() -> None:
    client = ExternalUserClient("http://127.0.0.1:9", backoff=0.1, max_backoff=0.5)
    with client:
        assert [client.backoff_delay(retry) for retry in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_retries_wait_backoff_delay_between_requests(api: HTTPServer) -> None:
    arrivals: list[float] = []

    def down(request: Request) -> Response:
        arrivals.append(time.monotonic())
        return Response("down", status=503)

    api.expect_request("/users/123").respond_with_handler(down)
    client = ExternalUserClient(api.url_for("/"), retries=3, backoff=0.05, max_backoff=0.1)
    with client, pytest.raises(ExternalServiceUnavailable, match="503"):
        client.get_user(123)

    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert [round(client.backoff_delay(n), 2) for n in (1, 2, 3)] == [0.05, 0.1, 0.1]
    assert len(gaps) == 3 and all(gap >= client.backoff_delay(n) for n, gap in enumerate(gaps, 1))


def test_retry_if_replaces_what_is_worth_a_retry(api: HTTPServer) -> None:
    api.expect_request("/users/bad id").respond_with_json({"error": "bad id"}, status=400)

    def everything(exc: BaseException) -> bool:
        return True

    client = ExternalUserClient(api.url_for("/"), retries=2, backoff=0.01, retry_if=everything)
    with client, pytest.raises(RequestRejected):
        client.get_user("bad id")

    assert requests_seen(api) == 3, "retry_if said every error is worth a retry"
    assert not is_transient(RequestRejected("400")) and not is_transient(UserNotFound("404"))


def test_breaker_opens_after_three_failures_then_fails_fast(api: HTTPServer) -> None:
    api.expect_request("/users/123").respond_with_data("down", status=503)

    with ExternalUserClient(
        api.url_for("/"), failure_threshold=3, reset_timeout=60, retries=0
    ) as client:
        for _ in range(3):
            with pytest.raises(ExternalServiceUnavailable, match="503"):
                client.get_user(123)
        assert client.circuit_state == "open"

        began = time.perf_counter()
        for _ in range(5):
            with pytest.raises(CircuitOpenError, match="open"):
                client.get_user(123)
        assert time.perf_counter() - began < 0.1

    assert requests_seen(api) == 3, "an open circuit must not call the server"


def test_open_breaker_stops_retries(api: HTTPServer) -> None:
    api.expect_request("/users/123").respond_with_data("down", status=503)

    client = ExternalUserClient(
        api.url_for("/"), failure_threshold=3, reset_timeout=60, retries=10, backoff=0.01
    )
    # Each attempt counts: the third trips the breaker, and the retry loop stops there.
    with client, pytest.raises(CircuitOpenError):
        client.get_user(123)

    assert requests_seen(api) == 3


def test_half_open_breaker_closes_when_the_service_recovers(api: HTTPServer) -> None:
    healthy = threading.Event()

    def flaky(request: Request) -> Response:
        if healthy.is_set():
            return Response('{"id": "123", "name": "Back"}', content_type="application/json")
        return Response("down", status=503)

    api.expect_request("/users/123").respond_with_handler(flaky)

    with ExternalUserClient(
        api.url_for("/"), failure_threshold=3, reset_timeout=0.2, retries=0
    ) as client:
        for _ in range(3):
            with pytest.raises(ExternalServiceUnavailable):
                client.get_user(123)
        assert client.circuit_state == "open"
        healthy.set()

        def try_once() -> ExternalUser | None:
            try:
                return client.get_user(123)
            except CircuitOpenError:
                return None

        user = wait_until(
            try_once, timeout=3, interval=0.02, message="breaker to let a call through"
        )
        assert user.name == "Back"
        assert client.circuit_state == "closed"

    # Three failures plus exactly one trial call: the fast failures never left the client.
    assert requests_seen(api) == 4


def test_half_open_trial_failure_opens_the_breaker_again(api: HTTPServer) -> None:
    api.expect_request("/users/123").respond_with_data("down", status=503)

    with ExternalUserClient(
        api.url_for("/"), failure_threshold=2, reset_timeout=0.2, retries=0
    ) as client:
        for _ in range(2):
            with pytest.raises(ExternalServiceUnavailable):
                client.get_user(123)

        def trial_failed() -> bool:
            try:
                client.get_user(123)
            except CircuitOpenError:
                return False
            except ExternalServiceUnavailable:
                return True
            return False

        wait_until(trial_failed, timeout=3, interval=0.02, message="the half-open trial call")
        assert client.circuit_state == "open"
        with pytest.raises(CircuitOpenError):
            client.get_user(123)

    assert requests_seen(api) == 3


def test_connection_refused_is_unavailable() -> None:
    client = ExternalUserClient("http://127.0.0.1:9", timeout=0.5, retries=1, backoff=0.01)
    with client, pytest.raises(ExternalServiceUnavailable, match="failed"):
        client.get_user(1)


def test_respx_cannot_tell_a_30s_timeout_from_a_300ms_one() -> None:
    """The in-process mock raises its "timeout" at once, whatever the client's setting.

    So this test passes for a client that would keep a real caller waiting 30 s per
    attempt; only the real server in `test_timeout_fires_at_the_configured_time`
    measures the timeout the client actually has.
    """
    base_url = "http://users.example"
    with (
        respx.mock(base_url=base_url) as mock,
        ExternalUserClient(base_url, timeout=30.0, retries=0) as careless,
    ):
        mock.get("/users/123").mock(side_effect=httpx.ReadTimeout("mocked"))
        began = time.perf_counter()
        with pytest.raises(ExternalServiceUnavailable):
            careless.get_user(123)

    assert time.perf_counter() - began < 0.5
