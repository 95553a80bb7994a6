"""Engines, sessions and the schema for the shop.

    >>> engine = create_engine_for(settings)    # bounded waits, pre-ping
    >>> upgrade(settings.database_url)          # Alembic migrations to head
    >>> with session_factory(engine)() as session: ...

Why a custom psycopg connection: a *frozen* PostgreSQL (paused container, SIGSTOP)
keeps its TCP sockets open, so the client's kernel sees nothing wrong and a query
waits forever; the server's statement_timeout cannot fire either, because the server
is not running. `BoundedWaitConnection` gives every wait on the socket a deadline,
after which the connection is closed and an OperationalError raised. The API turns
that into a 503 within seconds, and the pool throws the dead connection away.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from labkit.shop.settings import ShopSettings

MIGRATIONS_PACKAGE = "labkit.shop.data.migrations"
# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_KEY = 7_230_001


class BoundedWaitConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait on the server has a deadline."""

    io_timeout: float = 3.0

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return super().wait(gen, interval, self.io_timeout if timeout is None else timeout)
        except psycopg.errors._WaitTimeout:
            # The connection's state is unknown (a query may be half sent): close it so
            # nobody reuses it, and say what happened in terms a reader can act on.
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"PostgreSQL did not answer within {self.io_timeout}s "
                "(server paused, overloaded or unreachable); the connection was closed"
            ) from None


def create_engine_for(settings: ShopSettings) -> Engine:
    """An engine whose connects, statements and socket waits are all bounded."""
    statement_ms = int(settings.db_statement_timeout * 1000)
    engine = create_engine(
        settings.database_url,
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
            "application_name": "labkit-shop",
        },
    )

    @event.listens_for(engine, "do_connect")
    def _bounded_connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        connection = BoundedWaitConnection.connect(*cargs, **cparams)
        connection.io_timeout = settings.db_io_timeout
        return connection

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: handlers read the committed object to build the response
    # without a second round trip.
    return sessionmaker(bind=engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files(MIGRATIONS_PACKAGE)))
    config.attributes["connection"] = connection
    return config


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Migrate the shop schema to `revision` (the newest by default).

    Safe to call from several processes at once: an advisory lock serialises them,
    and an already-migrated database is left as it is.
    """
    from alembic import command

    engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with engine.begin() as connection:
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
            command.upgrade(_alembic_config(connection), revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def downgrade(url_or_engine: str | Engine, revision: str = "base") -> None:
    """Undo migrations down to `revision` (everything by default)."""
    from alembic import command

    engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with engine.begin() as connection:
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
            command.downgrade(_alembic_config(connection), revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits at the end of the block, or rolls back on error."""
    with factory() as session, session.begin():
        yield session
