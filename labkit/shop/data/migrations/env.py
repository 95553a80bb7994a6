"""Alembic environment: migrates the connection `labkit.shop.data.upgrade` hands over.

Run from the command line instead with
``alembic -x url=postgresql+psycopg://… -c <this folder>/alembic.ini upgrade head``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from labkit.shop.data.models import Base

target_metadata = Base.metadata


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit(
            "no database given: call labkit.shop.data.upgrade(url), or pass -x url=postgresql+psycopg://…"
        )
    engine = create_engine(url)
    with engine.begin() as conn:
        run_migrations(conn)
    engine.dispose()
