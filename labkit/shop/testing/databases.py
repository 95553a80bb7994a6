"""The shop's users on a live PostgreSQL, seen as other connections see them (lessons 02a, 02b).

    >>> from labkit.shop.testing.databases import create_committed_user, name_of
    >>> ada_id = create_committed_user(engine)       # committed for real: every connection sees it
    >>> name_of(engine, ada_id)
    'Ada'

What a test asserts about persistence ("nothing was written", "the first writer's name
was kept") is a claim about what *another* connection sees, so these helpers each read
or write on a connection of their own, never through the session under test.
`rename_while_locked` stages two writers on one row, the second blocked by the first's
row lock, which takes a thread and a wait on PostgreSQL's lock table that a lesson need
not read.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, event, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from labkit.shop.data import User, session_factory, transaction
from labkit.waiting import wait_until

__all__ = [
    "LockRace",
    "backend_pid",
    "create_committed_user",
    "delete_users",
    "name_of",
    "rename_while_locked",
    "updates_sent",
    "users_with_email",
    "waiting_for_a_lock",
]


def users_with_email(engine: Engine, email: str) -> int:
    """How many users have this address (case-insensitively), seen from a fresh connection."""
    with engine.connect() as connection:
        query = select(func.count()).select_from(User).where(func.lower(User.email) == email.lower())
        return connection.scalar(query) or 0


def create_committed_user(engine: Engine, name: str = "Ada") -> uuid.UUID:
    """The id of a new user named `name`, committed for real (version 1), with a unique address."""
    with transaction(session_factory(engine)) as session:
        user = User(
            email=f"{name.lower().replace(' ', '-')}-{uuid.uuid4().hex[:8]}@example.com",
            name=name,
            password_hash="not-a-real-hash",
        )
        session.add(user)
    return user.id


def name_of(engine: Engine, user_id: uuid.UUID) -> str | None:
    """The user's name as committed (None if there is no such user), from a fresh connection."""
    with engine.connect() as connection:
        return connection.scalar(select(User.name).where(User.id == user_id))


def delete_users(engine: Engine, user_ids: Iterable[uuid.UUID]) -> int:
    """Delete these users (their posts, comments and follows cascade); how many were deleted."""
    ids = list(user_ids)
    with engine.begin() as connection:
        return connection.execute(delete(User).where(User.id.in_(ids))).rowcount


def backend_pid(session: Session) -> int:
    """The PostgreSQL server process serving this session's connection: one per connection."""
    pid = session.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


def waiting_for_a_lock(engine: Engine, pid: int) -> bool:
    """Whether the server process `pid` is blocked waiting for a lock (pg_stat_activity)."""
    with engine.connect() as connection:
        query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
        return connection.scalar(query, {"pid": pid}) == "Lock"


@contextmanager
def updates_sent(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Record (statement, parameters) of every UPDATE sent through `engine` in the block."""
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if statement.startswith("UPDATE"):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


@dataclass(frozen=True)
class LockRace:
    """What happened when a second writer updated a row the first had locked."""

    second_waited: bool  # PostgreSQL reported the second writer waiting for a row lock
    second_outcome: str  # "committed", or the exception it raised, as "Type: message"
    name: str | None  # the name committed at the end


def rename_while_locked(
    engine: Engine, user_id: uuid.UUID, first: str, second: str, *, timeout: float = 10
) -> LockRace:
    """Two ORM sessions rename one user; the second writes while the first holds the row lock.

    The first session loads the user, renames it to `first` and flushes (its UPDATE holds
    the row lock until it commits). The second, in a thread, loads the same version and
    renames it to `second`; its commit blocks on that lock. Once PostgreSQL reports the
    second connection waiting (a wait with a deadline, no sleep), the first commits, and
    the second's UPDATE re-checks its WHERE against the row the first committed.
    """
    factory = session_factory(engine)
    seen: dict[str, Any] = {}
    loaded = threading.Event()

    def second_writer() -> None:
        with factory() as session:
            seen["pid"] = backend_pid(session)
            session.get(User, user_id).name = second  # type: ignore[union-attr]
            loaded.set()
            try:
                session.commit()  # blocks on the first writer's row lock
                seen["outcome"] = "committed"
            except StaleDataError as error:
                seen["outcome"] = f"{type(error).__name__}: {error}"

    with factory() as session:
        session.get(User, user_id).name = first  # type: ignore[union-attr]
        session.flush()  # the UPDATE is sent: the row is locked until this session commits
        writer = threading.Thread(target=second_writer, daemon=True)
        writer.start()
        try:
            wait_until(
                lambda: loaded.is_set() and waiting_for_a_lock(engine, seen["pid"]),
                timeout=timeout,
                message="the second writer's UPDATE never waited for the first's row lock",
            )
            waited = True
        except TimeoutError:
            waited = False
        session.commit()
    writer.join(timeout=timeout)
    return LockRace(waited, seen.get("outcome", "still waiting"), name_of(engine, user_id))
