"""A client for an external user API that stays polite when the API does not.

    >>> client = ExternalUserClient("http://users.internal:8080", timeout=1.0)
    >>> client.get_user(123)
    ExternalUser(id='123', name='External User', status='active')

Three defences, each for its own failure:

- **timeouts** on the connect and on *each read* (httpx): a server that stops sending
  costs at most `timeout` seconds per attempt instead of blocking the caller forever.
  The timeout bounds each wait for the next bytes, not the whole request: a server
  that trickles its answer can take longer, so a deadline for the whole call is the
  caller's;
- **retries** (tenacity) for what a second attempt can fix — connect errors, timeouts,
  502/503/504 — with exponential backoff (`backoff_delay`), and only because
  ``GET /users/{id}`` is idempotent. A 4xx is the caller's problem and is never
  retried (`is_transient` decides; `retry_if` replaces it);
- a **circuit breaker** (pybreaker) that counts failed attempts and, after
  `failure_threshold` in a row, fails fast with `CircuitOpenError` *without calling
  out* for `reset_timeout` seconds; then one trial call decides whether to close it.

The retry loop sits outside the breaker, so every attempt is counted, and an open
breaker stops the retries at once (retrying against an open circuit is pointless).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote

import httpx
import pybreaker
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

__all__ = [
    "CircuitOpenError",
    "ExternalApiError",
    "ExternalServiceUnavailable",
    "ExternalUser",
    "ExternalUserClient",
    "RequestRejected",
    "UserNotFound",
    "is_transient",
]

RETRYABLE_STATUS = frozenset({502, 503, 504})


class ExternalApiError(RuntimeError):
    """The external API answered something this client cannot use."""


class UserNotFound(ExternalApiError):
    """404: there is no such user (not a failure of the service)."""


class ExternalServiceUnavailable(ExternalApiError):
    """The service timed out, refused the connection, or answered 5xx."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class CircuitOpenError(ExternalApiError):
    """The breaker is open: the call failed fast, nothing was sent."""


class RequestRejected(ExternalApiError):
    """A 4xx other than 404: our request was wrong, the service is fine."""


@dataclass(frozen=True)
class ExternalUser:
    id: str
    name: str
    status: str | None = None


def is_transient(exc: BaseException) -> bool:
    """True for what a second attempt can fix: a timeout, a refused connection, 502/503/504.

    The client's default `retry_if`. A 4xx (404 included) is never transient: the same
    request gets the same answer.
    """
    return isinstance(exc, ExternalServiceUnavailable) and exc.transient


class ExternalUserClient:
    """``GET {base_url}/users/{id}`` with timeouts, safe retries and a circuit breaker.

    `retries` is the number of *extra* attempts after the first; `backoff` the first
    wait between attempts in seconds (doubling, capped at `max_backoff`: see
    `backoff_delay`); `retry_if` says which errors are worth another attempt
    (`is_transient` unless given: a test can pass a wrong one to show what it breaks).
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 2.0,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        transport: httpx.BaseTransport | None = None,
        retry_if: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        if timeout <= 0 or failure_threshold < 1 or reset_timeout <= 0 or retries < 0:
            raise ValueError(
                "need timeout > 0, failure_threshold >= 1, reset_timeout > 0 and retries >= 0, "
                f"got {timeout=} {failure_threshold=} {reset_timeout=} {retries=}"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.retry_if = retry_if
        self._http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout), transport=transport
        )
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failure_threshold,
            reset_timeout=reset_timeout,
            # A missing user or a bad request says nothing about the service's health.
            exclude=[UserNotFound, RequestRejected],
            # Let the attempt that trips the breaker raise its own error (the timeout,
            # the 503): "circuit opened" would hide what actually went wrong.
            throw_new_error_on_trip=False,
        )

    def backoff_delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1, 2, …): `backoff`, twice that,
        four times, … never more than `max_backoff`."""
        return min(self.max_backoff, self.backoff * 2 ** (retry - 1))

    @property
    def circuit_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        return str(self._breaker.current_state)

    def get_user(self, user_id: int | str) -> ExternalUser:
        """The user `user_id`.

        Raises UserNotFound (404), CircuitOpenError (failing fast),
        ExternalServiceUnavailable (after the retries), or ExternalApiError.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait_before_retry,
            retry=retry_if_exception(self.retry_if),
            reraise=True,
        )
        return retrying(self._attempt, user_id)

    def _wait_before_retry(self, state: RetryCallState) -> float:
        return self.backoff_delay(state.attempt_number)  # attempt 1 failed: retry 1 next

    def _attempt(self, user_id: int | str) -> ExternalUser:
        try:
            return self._breaker.call(self._fetch, user_id)
        except pybreaker.CircuitBreakerError:
            raise CircuitOpenError(
                f"circuit to {self.base_url} is open after repeated failures: not calling it "
                f"for {self._breaker.reset_timeout}s. Serve a fallback, or try again later."
            ) from None

    def _fetch(self, user_id: int | str) -> ExternalUser:
        path = f"/users/{quote(str(user_id), safe='')}"
        where = f"GET {self.base_url}{path}"
        try:
            response = self._http.get(path)
        except httpx.TimeoutException:
            raise ExternalServiceUnavailable(
                f"{where}: nothing received for {self.timeout}s (connect or read timeout)", transient=True
            ) from None
        except httpx.TransportError as exc:
            raise ExternalServiceUnavailable(f"{where} failed: {exc!r}", transient=True) from None

        status = response.status_code
        if status == 404:
            raise UserNotFound(f"{where}: no user {user_id!r} (404)")
        if 400 <= status < 500:
            raise RequestRejected(f"{where} answered {status}: {response.text[:200]!r}")
        if status >= 500:
            raise ExternalServiceUnavailable(
                f"{where} answered {status}", transient=status in RETRYABLE_STATUS
            )
        return _parse_user(where, response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _parse_user(where: str, response: httpx.Response) -> ExternalUser:
    try:
        data: Any = response.json()
    except ValueError:
        raise ExternalApiError(
            f"{where} answered {response.status_code} with non-JSON: {response.text[:200]!r}"
        ) from None
    if not isinstance(data, dict) or "id" not in data or "name" not in data:
        raise ExternalApiError(
            f"{where}: expected a JSON object with 'id' and 'name', got {str(data)[:200]}"
        )
    status = data.get("status")
    return ExternalUser(
        id=str(data["id"]), name=str(data["name"]), status=None if status is None else str(status)
    )
