"""Passwords (argon2id) and bearer tokens (JWT, HS256).

>>> hasher = password_hasher("owasp")
>>> stored = hasher.hash("correct horse")
>>> token = issue_token(settings, user_id)
>>> read_token(settings, token)   # -> the user id, or TokenError
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from labkit.shop.settings import PasswordProfile, ShopSettings

ISSUER = "labkit-shop"
# Verified tokens remembered per process: ~1 kB each, one per active client.
TOKENS_REMEMBERED = 4096


@cache
def password_hasher(profile: PasswordProfile) -> PasswordHasher:
    """argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane), or a cheap test profile.

    The "fast" profile keeps property-based tests that create hundreds of users quick;
    it must never be used for real passwords.
    """
    if profile == "owasp":
        return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
    return PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def verify_password(profile: PasswordProfile, stored_hash: str, password: str) -> bool:
    try:
        return password_hasher(profile).verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A real hash to verify against when the email is unknown, so "no such user" costs
# as much time as "wrong password" and response times do not reveal who has an account.
@cache
def decoy_hash(profile: PasswordProfile) -> str:
    return password_hasher(profile).hash("decoy-password-nobody-has")


class TokenError(ValueError):
    """A bearer token was missing, malformed, badly signed or expired."""


def issue_token(
    settings: ShopSettings, user_id: uuid.UUID | str, ttl_seconds: int | None = None
) -> str:
    """A signed token saying "this is user `user_id`", valid for the configured TTL.

    A negative `ttl_seconds` gives an already expired token, for tests of the 401 path.
    """
    now = datetime.now(UTC)
    ttl = settings.jwt_ttl_seconds if ttl_seconds is None else ttl_seconds
    claims = {"sub": str(user_id), "iss": ISSUER, "iat": now, "exp": now + timedelta(seconds=ttl)}
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def read_token(settings: ShopSettings, token: str) -> uuid.UUID:
    """The user id a valid token speaks for; `TokenError` saying why otherwise."""
    user_id, expires_at = _verified(settings.jwt_secret.get_secret_value(), token)
    # A remembered token is checked against the clock on every use, as PyJWT would.
    if expires_at <= time.time():
        raise _expired()
    return user_id


# A client sends the same token with every request until it expires: verifying it once
# and remembering the outcome took PyJWT's decoding and claim checks (12% of the
# app's CPU on a cached profile read) off the hot path. Only tokens that verified are
# remembered, keyed by the secret and the whole token (its signature included), so a
# forged or altered token never matches one; a failure is raised, so never cached.
@lru_cache(maxsize=TOKENS_REMEMBERED)
def _verified(secret: str, token: str) -> tuple[uuid.UUID, float]:
    """The subject and expiry (epoch seconds) of a token that verified with `secret`."""
    try:
        claims = jwt.decode(
            token,
            secret,
            # Pinning the algorithm stops "alg: none" and key-confusion tricks.
            algorithms=["HS256"],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise _expired() from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    try:
        return uuid.UUID(claims["sub"]), float(claims["exp"])
    except (ValueError, TypeError, AttributeError):
        raise TokenError("invalid token: its subject is not a user id") from None


def _expired() -> TokenError:
    return TokenError("token expired: log in again at POST /api/tokens")
