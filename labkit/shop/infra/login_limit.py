"""Failed logins counted in Redis, per account and per client, so passwords cannot be
guessed at speed: neither many passwords for one email, nor one password for many emails.

After ``login_max_failures`` wrong passwords for one email, or
``login_max_failures_per_client`` from one client (any emails), within
``login_failure_window_seconds`` (counted from the first of them), the login answers 429
with Retry-After until the window ends, even with the right password: otherwise the
guessing would simply go on. A successful login clears its email's count, not its
client's: an attacker who owns one account must not wipe their count by logging in to it
between guesses. The counts live in Redis, not in the process, so they hold across
workers and restarts.

The client is the peer address the ASGI server reports (uvicorn's ``client`` host). The
shop's servers (`labkit.shop.serve`, `ShopServer`) ignore ``X-Forwarded-For`` unless
proxies are named in ``ShopSettings.forwarded_allow_ips``: a header any client can write
must not choose whose count a failure goes to. Behind a reverse proxy, name it there, or
every client shares the proxy's count. A request with no client address (a Unix socket)
is counted per email only.

Redis down: logins go on uncounted (logged). Refusing every login while the cache is
down would turn a Redis outage into a shop outage; the limit is a brake, not the lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import redis

from labkit.shop.settings import ShopSettings

log = logging.getLogger(__name__)


def failures_key(email: str) -> str:
    return f"login-failures:{email.lower()}"


def client_failures_key(client: str) -> str:
    return f"login-failures-by-client:{client}"


@dataclass(frozen=True)
class Lockout:
    """Why a login is refused (``by``: the email's count or the client's) and for how long."""

    by: Literal["email", "client"]
    limit: int
    retry_after: int


class LoginLimit:
    """``locked_for(email, client)`` before checking a password; ``failed``/``succeeded`` after."""

    def __init__(self, client: redis.Redis, settings: ShopSettings) -> None:
        self.client = client
        self.max_failures = settings.login_max_failures
        self.max_failures_per_client = settings.login_max_failures_per_client
        self.window = settings.login_failure_window_seconds

    def _keys(
        self, email: str, client: str | None
    ) -> list[tuple[str, int, Literal["email", "client"]]]:
        keys: list[tuple[str, int, Literal["email", "client"]]] = [
            (failures_key(email), self.max_failures, "email")
        ]
        if client:
            keys.append((client_failures_key(client), self.max_failures_per_client, "client"))
        return keys

    def locked_for(self, email: str, client: str | None = None) -> Lockout | None:
        """The lockout `email` from `client` is under now, if any (the longer one if both)."""
        keys = self._keys(email, client)
        try:
            pipe = self.client.pipeline()
            for key, _, _ in keys:
                pipe.get(key)
                pipe.ttl(key)
            replies = pipe.execute()
        except redis.RedisError as exc:
            log.warning("login limit unchecked for %s (Redis failed): %s", email, exc)
            return None
        lockouts = [
            # ttl < 0 cannot last: the window is set with the count
            Lockout(by=by, limit=limit, retry_after=max(int(ttl), 1))
            for (_, limit, by), count, ttl in zip(keys, replies[::2], replies[1::2], strict=True)
            if count is not None and int(count) >= limit
        ]
        return max(lockouts, key=lambda lockout: lockout.retry_after, default=None)

    def failed(self, email: str, client: str | None = None) -> None:
        """Count one wrong password for `email` and for `client`; a window starts at the first."""
        try:
            pipe = self.client.pipeline()  # MULTI/EXEC: counts and expiries together
            for key, _, _ in self._keys(email, client):
                pipe.set(key, 0, ex=self.window, nx=True)
                pipe.incr(key)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("failed login for %s not counted (Redis failed): %s", email, exc)

    def succeeded(self, email: str) -> None:
        """Clear `email`'s count (its client's stays: see the module's docstring)."""
        try:
            self.client.delete(failures_key(email))
        except redis.RedisError as exc:
            log.warning("login failures for %s not cleared (Redis failed): %s", email, exc)
