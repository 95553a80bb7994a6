"""The shop's persistence: SQLAlchemy models, engines and sessions, Alembic migrations.

    >>> from labkit.shop.data import User, session_factory, create_engine_for, upgrade
    >>> upgrade(settings.database_url)                  # the schema, migrated to head
    >>> sessions = session_factory(create_engine_for(settings))

Imports SQLAlchemy and psycopg only: no web framework, no broker.
"""

from labkit.shop.data.db import (
    BoundedWaitConnection,
    create_engine_for,
    downgrade,
    session_factory,
    transaction,
    upgrade,
)
from labkit.shop.data.models import (
    MONEY,
    AnalyticsCounter,
    Base,
    Comment,
    Order,
    OrderItem,
    OrderStatus,
    OutboxEvent,
    Post,
    ProcessedMessage,
    User,
    followers_table,
)

__all__ = [
    "MONEY",
    "AnalyticsCounter",
    "Base",
    "BoundedWaitConnection",
    "Comment",
    "Order",
    "OrderItem",
    "OrderStatus",
    "OutboxEvent",
    "Post",
    "ProcessedMessage",
    "User",
    "create_engine_for",
    "downgrade",
    "followers_table",
    "session_factory",
    "transaction",
    "upgrade",
]
