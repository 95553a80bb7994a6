"""SQL helpers that the fixtures, the lessons and the bench share, usable outside pytest.

    >>> from labkit import services
    >>> from labkit.sql import engine_for, rolled_back_session
    >>> engine = engine_for(services.get("postgres").url)
    >>> with rolled_back_session(engine) as session:
    ...     ...   # commit freely: nothing outlives the block

They live here rather than in the pytest plugin so that code which is not a test suite
(a notebook cell, the isolation benchmark) can use them without loading pytest's plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

__all__ = ["engine_for", "rolled_back_session"]


@cache
def engine_for(url: str) -> Engine:
    """One engine (and connection pool) per database URL for the process."""
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def rolled_back_session(engine: Engine) -> Iterator[Session]:
    """A session whose every write is rolled back at the end of the block.

    The SQLAlchemy 2.0 recipe: everything runs inside an outer transaction on one
    connection; the session's own commit() and rollback() work on SAVEPOINTs inside it
    (``join_transaction_mode="create_savepoint"``), so code under test may commit
    freely and still nothing outlives the block.
    """
    with engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()
