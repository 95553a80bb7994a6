"""What it costs to keep database tests apart, measured on the live PostgreSQL.

    >>> from labkit.isolation import measure_isolation, summarize
    >>> costs = measure_isolation(engine, rounds=30)   # one row per strategy and round
    >>> summarize(costs)                               # median and p95 per strategy, in ms

Four strategies, each wrapped around the same small test body (a user, a post, two
tags and a comment, committed, then read back with a join):

- ``savepoint`` — labkit's ``db_session``: the test runs in an outer transaction that
  is rolled back; the session's commits only release SAVEPOINTs inside it.
- ``delete`` — the test commits for real; DELETE empties the tables it writes after.
- ``truncate`` — the same, with ``TRUNCATE … RESTART IDENTITY``.
- ``template database`` — each test gets a new database copied from a template
  (``CREATE DATABASE … TEMPLATE``), dropped after.

`seconds` is what the strategy adds to one test: its setup plus its teardown. The
body's own time is reported apart (`body_seconds`), so the numbers compare isolation,
not inserts (a fresh database or a truncated table starts with cold caches, which
shows there). Everything happens in a private schema (and, for the template strategy,
private databases) with a random name, removed afterwards: measuring twice, or from
two kernels at once, is safe, and the tables the lessons use are never touched.
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from labkit.sql import rolled_back_session

STRATEGIES = ("savepoint", "delete", "truncate", "template database")
SAVEPOINT_TARGET_SECONDS = 0.001
REFERENCE_TAGS = 100


class IsolationError(RuntimeError):
    """A strategy let a test's rows through to the next test, or could not be set up."""


@dataclass(frozen=True)
class Schema:
    """The benchmark's five tables, in a schema of their own."""

    name: str
    metadata: MetaData
    users: Table
    posts: Table
    comments: Table
    tags: Table
    post_tags: Table

    @property
    def written(self) -> tuple[Table, ...]:
        """The tables a test writes to, children first (the order DELETE needs)."""
        return (self.comments, self.post_tags, self.posts, self.users)

    def qualified(self, table: Table) -> str:
        return f'"{self.name}"."{table.name}"'


def build_schema(name: str) -> Schema:
    """Users, their posts and comments, and reference tags linked to posts."""
    metadata = MetaData(schema=name)
    users = Table(
        "users", metadata,
        Column("id", Integer, primary_key=True),
        Column("email", String(200), nullable=False, unique=True),
        Column("name", String(100), nullable=False),
    )
    posts = Table(
        "posts", metadata,
        Column("id", Integer, primary_key=True),
        Column("author_id", ForeignKey(users.c.id, ondelete="CASCADE"), nullable=False, index=True),
        Column("title", String(200), nullable=False),
        Column("body", Text, nullable=False),
    )
    comments = Table(
        "comments", metadata,
        Column("id", Integer, primary_key=True),
        Column("post_id", ForeignKey(posts.c.id, ondelete="CASCADE"), nullable=False, index=True),
        Column("author_id", ForeignKey(users.c.id, ondelete="CASCADE"), nullable=False),
        Column("body", Text, nullable=False),
    )
    tags = Table(
        "tags", metadata,
        Column("id", Integer, primary_key=True),
        Column("label", String(50), nullable=False, unique=True),
    )
    post_tags = Table(
        "post_tags", metadata,
        Column("post_id", ForeignKey(posts.c.id, ondelete="CASCADE"), primary_key=True),
        Column("tag_id", ForeignKey(tags.c.id), primary_key=True),
    )
    return Schema(name, metadata, users, posts, comments, tags, post_tags)


def create_schema(engine: Engine, schema: Schema) -> None:
    """Create the schema and its tables, with the reference tags every test starts from."""
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema.name}"'))
        schema.metadata.create_all(connection)
        connection.execute(
            insert(schema.tags),
            [{"id": i, "label": f"tag-{i}"} for i in range(1, REFERENCE_TAGS + 1)],
        )


def drop_schema(engine: Engine, schema: Schema) -> None:
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema.name}" CASCADE'))


def run_test_body(session: Session, schema: Schema) -> int:
    """What a typical database test does: write related rows, commit, read them back."""
    user_id = session.scalar(
        insert(schema.users)
        .values(email=f"{secrets.token_hex(6)}@example.com", name="Ada")
        .returning(schema.users.c.id)
    )
    post_id = session.scalar(
        insert(schema.posts)
        .values(author_id=user_id, title="First post", body="Hello")
        .returning(schema.posts.c.id)
    )
    session.execute(insert(schema.post_tags), [{"post_id": post_id, "tag_id": t} for t in (1, 2)])
    session.execute(insert(schema.comments).values(post_id=post_id, author_id=user_id, body="Nice"))
    session.commit()
    joined = (
        select(func.count())
        .select_from(schema.posts)
        .join(schema.post_tags, schema.post_tags.c.post_id == schema.posts.c.id)
        .where(schema.posts.c.author_id == user_id)
    )
    return session.execute(joined).scalar_one()


# -- the strategies: each yields a session for one test, and cleans up after ----------
# Each opens the session's connection in its setup, so connecting is charged to the
# strategy (a new database means a new connection), never to the test body.

@contextmanager
def savepoint_session(engine: Engine, schema: Schema, template: str) -> Iterator[Session]:
    """labkit's db_session: an outer transaction rolled back, commits become SAVEPOINTs."""
    with rolled_back_session(engine) as session:
        session.connection()
        yield session


@contextmanager
def delete_session(engine: Engine, schema: Schema, template: str) -> Iterator[Session]:
    """Real commits; DELETE FROM every written table afterwards (children first)."""
    session = Session(engine)
    session.connection()
    try:
        yield session
    finally:
        session.close()
        with engine.begin() as connection:
            for table in schema.written:
                connection.execute(table.delete())


@contextmanager
def truncate_session(engine: Engine, schema: Schema, template: str) -> Iterator[Session]:
    """Real commits; one TRUNCATE of every written table afterwards."""
    session = Session(engine)
    session.connection()
    try:
        yield session
    finally:
        session.close()
        tables = ", ".join(schema.qualified(t) for t in schema.written)
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))


@contextmanager
def template_session(engine: Engine, schema: Schema, template: str) -> Iterator[Session]:
    """A database of the test's own, copied from the template and dropped after."""
    database = f"{template.removesuffix('_template')}_{secrets.token_hex(4)}"
    _autocommit(engine, f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
    own = create_engine(engine.url.set(database=database), poolclass=NullPool)
    session = Session(own)
    session.connection()
    try:
        yield session
    finally:
        session.close()
        own.dispose()
        _autocommit(engine, f'DROP DATABASE IF EXISTS "{database}"')


STRATEGY_SESSIONS: dict[str, Callable[[Engine, Schema, str], AbstractContextManager[Session]]] = {
    "savepoint": savepoint_session,
    "delete": delete_session,
    "truncate": truncate_session,
    "template database": template_session,
}


def _autocommit(engine: Engine, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(statement))


def may_create_databases(engine: Engine) -> bool:
    """Whether `engine`'s user may CREATE DATABASE (CREATEDB, or a superuser).

    The 'template database' strategy needs it; a tenant's role (`labkit up`, admin URLs)
    has it not, so a lesson asks first rather than have `measure_isolation` warn.
    """
    with engine.connect() as connection:
        return bool(connection.scalar(text(
            "select rolcreatedb or rolsuper from pg_roles where rolname = current_user")))


def _create_template(engine: Engine, schema: Schema) -> str | None:
    """A template database holding the schema, or None (with a warning) without CREATEDB."""
    template = f"{schema.name}_template"
    try:
        _autocommit(engine, f'CREATE DATABASE "{template}"')
    except ProgrammingError as exc:
        warnings.warn(
            f"skipping 'template database': user {engine.url.username!r} may not create "
            f"databases ({exc.orig.__class__.__name__}). Grant it with "
            f"`ALTER ROLE {engine.url.username} CREATEDB`, or measure on the local or docker backend.",
            stacklevel=3,
        )
        return None
    template_engine = create_engine(engine.url.set(database=template), poolclass=NullPool)
    try:
        create_schema(template_engine, schema)
    finally:
        template_engine.dispose()  # a template must have no connections to be copied
    return template


def _leftover_rows(engine: Engine, schema: Schema) -> dict[str, int]:
    with engine.connect() as connection:
        counts = {
            t.name: connection.scalar(select(func.count()).select_from(t)) for t in schema.written
        }
    return {name: n for name, n in counts.items() if n}


def measure_isolation(
    engine: Engine,
    rounds: int = 100,
    strategies: Sequence[str] = STRATEGIES,
    warmup: int = 3,
) -> pd.DataFrame:
    """Time each strategy's per-test setup + teardown around the same test body.

    Returns one row per strategy and round, with columns strategy, round, seconds
    (setup + teardown: the isolation's cost), setup_seconds, teardown_seconds and
    body_seconds. `warmup` rounds per strategy run first and are not kept. After each
    strategy, the shared tables must be empty again, or IsolationError says which
    strategy leaked what. A strategy the database user may not run (the template one
    needs CREATEDB) is skipped with a warning.
    """
    unknown = set(strategies) - set(STRATEGY_SESSIONS)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}: choose from {list(STRATEGIES)}")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds=} {warmup=}")
    schema = build_schema(f"labkit_isolation_{secrets.token_hex(4)}")
    create_schema(engine, schema)
    template = None
    rows = []
    try:
        if "template database" in strategies:
            template = _create_template(engine, schema)
        for name in strategies:
            if name == "template database" and template is None:
                continue
            rows += _measure(engine, schema, template or "", name, rounds, warmup)
            leaked = _leftover_rows(engine, schema)
            if leaked:
                raise IsolationError(f"strategy {name!r} left rows behind: {leaked}")
    finally:
        drop_schema(engine, schema)
        if template is not None:
            _autocommit(engine, f'DROP DATABASE IF EXISTS "{template}"')
    return pd.DataFrame(
        rows,
        columns=["strategy", "round", "seconds", "setup_seconds", "teardown_seconds", "body_seconds"],
    )


def _measure(
    engine: Engine, schema: Schema, template: str, name: str, rounds: int, warmup: int
) -> list[dict]:
    isolated = STRATEGY_SESSIONS[name]
    rows = []
    for n in range(warmup + rounds):
        began = time.perf_counter()
        with isolated(engine, schema, template) as session:
            body_began = time.perf_counter()
            tagged = run_test_body(session, schema)
            body_ended = time.perf_counter()
        ended = time.perf_counter()
        if tagged != 2:
            raise IsolationError(f"strategy {name!r}: the test body saw {tagged} tagged posts, not 2")
        if n >= warmup:
            setup, body, teardown = body_began - began, body_ended - body_began, ended - body_ended
            rows.append({
                "strategy": name,
                "round": n - warmup,
                "seconds": setup + teardown,
                "setup_seconds": setup,
                "teardown_seconds": teardown,
                "body_seconds": body,
            })
    return rows


def summarize(costs: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: rounds, median and p95 of the isolation cost and of the body, in ms."""
    grouped = costs.groupby("strategy", sort=False)
    summary = pd.DataFrame({
        "rounds": grouped.size(),
        "median ms": grouped.seconds.median() * 1000,
        "p95 ms": grouped.seconds.quantile(0.95) * 1000,
        "body median ms": grouped.body_seconds.median() * 1000,
    })
    return summary.sort_values("median ms")
