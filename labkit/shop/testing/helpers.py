"""Helpers for testing the shop, in tests/ and in lesson notebooks.

    >>> from labkit.shop.testing import add_user, auth_header, queued_json

Test data goes straight into PostgreSQL (`add_user`, `add_post`, `add_comment`,
`add_follow`); the API under test then reads it. `reset_shop_data` empties every shop
table between tests.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from functools import cache
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from labkit.shop.data.db import upgrade
from labkit.shop.data.models import Base, Comment, Post, User, followers_table
from labkit.shop.domain.security import issue_token, password_hasher
from labkit.shop.settings import ShopSettings

DEFAULT_PASSWORD = "SecurePass123!"

# Test-sized timeouts (`shop_settings` uses them): short enough that outage tests take
# seconds, long enough for a loaded CI machine.
TEST_TIMEOUTS: dict[str, Any] = {
    "db_connect_timeout": 2,
    "db_statement_timeout": 2.0,
    "db_io_timeout": 1.5,
    "db_pool_timeout": 2.0,
    "downstream_timeout": 1.0,
    "redis_timeout": 1.0,
    "amqp_timeout": 2.0,
}


# -- schema and cleanup ------------------------------------------------------------------


@cache
def migrate_once(database_url: str) -> None:
    """Migrate the shop schema, once per database URL for this process."""
    upgrade(database_url)


def reset_shop_data(engine: Engine) -> None:
    """Empty every shop table (not the schema): a clean slate for the next test.

    DELETE, children before parents: with a handful of rows it is as quick as TRUNCATE
    and, unlike TRUNCATE, takes no lock that waits for other open transactions.
    """
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


# -- data ---------------------------------------------------------------------------------


def add_user(
    session: Session,
    *,
    email: str | None = None,
    name: str = "Test User",
    password: str = DEFAULT_PASSWORD,
    commit: bool = True,
) -> User:
    """A user with a (cheaply) hashed password, committed unless told otherwise."""
    user = User(
        id=uuid.uuid4(),
        email=email or f"user-{uuid.uuid4().hex[:10]}@example.com",
        name=name,
        password_hash=password_hasher("fast").hash(password),
    )
    session.add(user)
    if commit:
        session.commit()
    return user


def add_post(
    session: Session,
    author: User,
    *,
    title: str = "A post",
    content: str = "Some content",
    tags: list[str] | None = None,
) -> Post:
    post = Post(id=uuid.uuid4(), author_id=author.id, title=title, content=content, tags=tags or [])
    session.add(post)
    session.commit()
    return post


def add_comment(session: Session, post: Post, author: User, content: str = "Nice post") -> Comment:
    comment = Comment(id=uuid.uuid4(), post_id=post.id, author_id=author.id, content=content)
    session.add(comment)
    session.commit()
    return comment


def add_follow(session: Session, follower: User, followed: User) -> None:
    session.execute(
        followers_table.insert().values(follower_id=follower.id, followed_id=followed.id)
    )
    session.commit()


def auth_header(
    settings: ShopSettings, user_id: uuid.UUID | str, ttl_seconds: int | None = None
) -> dict[str, str]:
    """``{"Authorization": "Bearer …"}`` for `user_id`, signed with the app's secret."""
    return {"Authorization": f"Bearer {issue_token(settings, user_id, ttl_seconds)}"}


# -- messages -----------------------------------------------------------------------------


def queued_json(
    channel: BlockingChannel, queue: str, *, expect: int = 1, timeout: float = 3.0
) -> list[Any]:
    """The JSON bodies waiting in `queue` (consumed), polling until `expect` or `timeout`.

    Returns early once `expect` messages arrived; returns what there is at the timeout,
    so ``assert queued_json(ch, q, expect=0, timeout=0.5) == []`` checks for silence.
    """
    bodies: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            bodies.append(json.loads(body))
            if expect and len(bodies) >= expect:
                return bodies
            continue
        if time.monotonic() >= deadline:
            return bodies
        time.sleep(0.05)


# -- faults -------------------------------------------------------------------------------


# -- clients ------------------------------------------------------------------------------


def client_for(app: Any, client: tuple[str, int] = ("testclient", 50000)) -> Any:
    """A `fastapi.testclient.TestClient` on `app`, in process (no socket, no lifespan).

    `client` is the (host, port) the app sees as the peer: two addresses stand for two
    machines (the login limit counts per client).

    Not used as ``with TestClient(app)``: that runs the app's shutdown on exit and
    closes the connections a long-lived app still needs.
    """
    with warnings.catch_warnings():
        # Starlette nudges towards httpx2; TestClient works the same either way.
        warnings.filterwarnings("ignore", message=".*httpx2", category=UserWarning)
        from fastapi.testclient import TestClient
    return TestClient(app, client=client)
