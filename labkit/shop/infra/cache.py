"""The Redis cache in front of users and profiles.

Keys: ``user:{id}`` holds ``{"id", "email", "name"}`` as JSON; ``profile:{id}`` holds
a whole profile response (with the email: the API strips it for other viewers) and
expires after ``profile_cache_ttl_seconds``. Writers delete ``profile:{id}`` after
their commit, so the next read rebuilds it.

The cache is an optimisation, never the source of truth: a Redis error is logged and
the request goes on against PostgreSQL.

`Cache` is the blocking client, for handlers on the thread pool and background jobs.
`LoopCache` reads with an asyncio client bound to one event loop, the one that serves
the shop: a cache hit then never leaves the loop (a thread-pool hop cost more than the
read), and a frozen Redis stalls only the requests that wait on it, for at most
``redis_timeout``, not the loop.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import redis
import redis.asyncio

from labkit.shop.settings import ShopSettings

log = logging.getLogger(__name__)


def user_key(user_id: uuid.UUID | str) -> str:
    return f"user:{user_id}"


def profile_key(user_id: uuid.UUID | str) -> str:
    return f"profile:{user_id}"


def connect(settings: ShopSettings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
    )


def connect_async(settings: ShopSettings) -> redis.asyncio.Redis:
    """The asyncio twin of `connect` (same URL, timeouts); use it on one event loop only."""
    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
    )


def _decoded(raw: str | bytes | None) -> Any | None:
    return None if raw is None else json.loads(raw)


def _read_failed(key: str, exc: Exception) -> None:
    log.warning("cache read of %s failed, reading the database instead: %s", key, exc)


class Cache:
    """JSON values in Redis, where every failure degrades to a cache miss."""

    def __init__(self, client: redis.Redis, settings: ShopSettings) -> None:
        self.client = client
        self.settings = settings

    def get_json(self, key: str) -> Any | None:
        try:
            raw = self.client.get(key)
        except redis.RedisError as exc:
            _read_failed(key, exc)
            return None
        return _decoded(raw)

    def set_json(self, key: str, value: Any, ttl_seconds: int) -> None:
        try:
            self.client.set(key, json.dumps(value), ex=ttl_seconds)
        except redis.RedisError as exc:
            log.warning("cache write of %s failed (it will be rebuilt on read): %s", key, exc)

    def delete(self, *keys: str) -> None:
        try:
            self.client.delete(*keys)
        except redis.RedisError as exc:
            # A stale profile lives at most profile_cache_ttl_seconds: the TTL is the backstop.
            log.warning("cache invalidation of %s failed: %s", keys, exc)

    def put_user(self, user: dict[str, Any]) -> None:
        self.set_json(user_key(user["id"]), user, self.settings.user_cache_ttl_seconds)

    def forget_profiles(self, *user_ids: uuid.UUID | str) -> None:
        if user_ids:
            self.delete(*(profile_key(u) for u in user_ids))


class LoopCache:
    """`Cache.get_json` for coroutines on the event loop this was made on.

    An asyncio Redis client belongs to the loop its connections were opened on: the
    serving shop makes one when it starts serving (`Shop.serving`) and closes it when it
    stops. Elsewhere (a TestClient without ``with`` runs each request on a loop of its
    own) handlers read through the blocking `Cache` on the thread pool instead.
    """

    def __init__(self, settings: ShopSettings) -> None:
        self.client = connect_async(settings)

    async def get_json(self, key: str) -> Any | None:
        try:
            raw = await self.client.get(key)
        except redis.RedisError as exc:
            _read_failed(key, exc)
            return None
        return _decoded(raw)

    async def aclose(self) -> None:
        await self.client.aclose()
