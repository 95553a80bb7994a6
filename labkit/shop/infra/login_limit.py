"""Failed logins counted per account in Redis, so a password cannot be guessed at speed.

After ``login_max_failures`` wrong passwords for one email within
``login_failure_window_seconds`` (counted from the first of them), the login answers 429
with Retry-After until the window ends, even with the right password: otherwise the
guessing would simply go on. A successful login clears the count. The count lives in
Redis, not in the process, so it holds across workers and restarts.

Redis down: logins go on uncounted (logged). Refusing every login while the cache is
down would turn a Redis outage into a shop outage; the limit is a brake, not the lock.
"""

from __future__ import annotations

import logging

import redis

from labkit.shop.settings import ShopSettings

log = logging.getLogger(__name__)


def failures_key(email: str) -> str:
    return f"login-failures:{email.lower()}"


class LoginLimit:
    """``locked_for(email)`` before checking a password; ``failed``/``succeeded`` after."""

    def __init__(self, client: redis.Redis, settings: ShopSettings) -> None:
        self.client = client
        self.max_failures = settings.login_max_failures
        self.window = settings.login_failure_window_seconds

    def locked_for(self, email: str) -> int:
        """Seconds until `email` may try again; 0 if it may now."""
        key = failures_key(email)
        try:
            pipe = self.client.pipeline()
            pipe.get(key)
            pipe.ttl(key)
            count, ttl = pipe.execute()
        except redis.RedisError as exc:
            log.warning("login limit unchecked for %s (Redis failed): %s", email, exc)
            return 0
        if count is None or int(count) < self.max_failures:
            return 0
        return max(int(ttl), 1)  # ttl < 0 cannot last: the window is set with the count

    def failed(self, email: str) -> None:
        """Count one wrong password; the window starts at the first one."""
        key = failures_key(email)
        try:
            pipe = self.client.pipeline()  # MULTI/EXEC: count and expiry together
            pipe.set(key, 0, ex=self.window, nx=True)
            pipe.incr(key)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("failed login for %s not counted (Redis failed): %s", email, exc)

    def succeeded(self, email: str) -> None:
        try:
            self.client.delete(failures_key(email))
        except redis.RedisError as exc:
            log.warning("login failures for %s not cleared (Redis failed): %s", email, exc)
