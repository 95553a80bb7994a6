"""The shop's tables as SQLAlchemy 2.0 typed models.

The schema itself is owned by the Alembic migrations in ``labkit/shop/data/migrations``
(`labkit.shop.data.upgrade(url)`); these classes must stay in step with them, and
``tests/shop/test_models.py`` checks that they do.

Conventions:
- ids are UUIDs (they travel as strings in JSON and GraphQL);
- money is `Decimal` in `Numeric` columns, never float;
- rows that two writers may update at once carry a ``version`` column used by
  SQLAlchemy's optimistic locking (``version_id_col``): a stale write raises
  `sqlalchemy.orm.exc.StaleDataError` instead of silently overwriting.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

MONEY = Numeric(14, 2)


class Base(DeclarativeBase):
    pass


def _now_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


followers_table = Table(
    "followers",
    Base.metadata,
    Column("follower_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("followed_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    CheckConstraint("follower_id <> followed_id", name="ck_followers_not_self"),
)
"""Who follows whom: a self-referential many-to-many on users."""


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # Emails are unique whatever their case: "Ada@x.org" and "ada@x.org" are one person.
        Index("uq_users_email_lower", func.lower(text("email")), unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    created_at: Mapped[datetime] = _now_column()
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    # passive_deletes: the database's ON DELETE CASCADE removes posts and comments,
    # so deleting a user is one statement, not one per child row.
    posts: Mapped[list[Post]] = relationship(
        back_populates="author",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Post.created_at.desc()",
    )
    comments: Mapped[list[Comment]] = relationship(
        back_populates="author", cascade="all, delete-orphan", passive_deletes=True
    )
    followers: Mapped[list[User]] = relationship(
        secondary=followers_table,
        primaryjoin=lambda: User.id == followers_table.c.followed_id,
        secondaryjoin=lambda: User.id == followers_table.c.follower_id,
        back_populates="following",
        passive_deletes=True,
    )
    following: Mapped[list[User]] = relationship(
        secondary=followers_table,
        primaryjoin=lambda: User.id == followers_table.c.follower_id,
        secondaryjoin=lambda: User.id == followers_table.c.followed_id,
        back_populates="followers",
        passive_deletes=True,
    )
    orders: Mapped[list[Order]] = relationship(back_populates="user", passive_deletes="all")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy reads it once)

    def __repr__(self) -> str:
        return f"User(id={self.id}, email={self.email!r})"


class Post(Base):
    __tablename__ = "posts"
    __table_args__ = (Index("ix_posts_search_vector", "search_vector", postgresql_using="gin"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    author_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    tags: Mapped[list[str]] = mapped_column(
        ARRAY(String(50)), nullable=False, default=list, server_default=text("'{}'")
    )
    created_at: Mapped[datetime] = _now_column()
    # Maintained by PostgreSQL itself, so no code path can forget to index a post.
    search_vector: Mapped[Any] = mapped_column(
        TSVECTOR,
        Computed(
            "setweight(to_tsvector('english', coalesce(title, '')), 'A') || "
            "setweight(to_tsvector('english', coalesce(content, '')), 'B')",
            persisted=True,
        ),
        deferred=True,
    )

    author: Mapped[User] = relationship(back_populates="posts")
    comments: Mapped[list[Comment]] = relationship(
        back_populates="post",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Comment.created_at",
    )

    def __repr__(self) -> str:
        return f"Post(id={self.id}, title={self.title!r})"


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    post_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), index=True, nullable=False
    )
    author_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    content: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now_column()

    post: Mapped[Post] = relationship(back_populates="comments")
    author: Mapped[User] = relationship(back_populates="comments")


class OrderStatus(str, enum.Enum):
    """Where an order stands. Stored as text so later stages can add their own."""

    # stored; being reserved and paid, or stuck after an outage until the reconciler
    # (labkit.shop.domain.orders.reconcile_orders) or a retry completes it
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"  # paid; ORDER_CREATED is in the outbox
    PAYMENT_DECLINED = "PAYMENT_DECLINED"  # declined; the reservation was released
    CANCELLED = "CANCELLED"  # inventory could not be reserved


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total_amount >= 0", name="ck_orders_total_not_negative"),
        # The reconciler's query: orders PENDING since before some time. Partial, so it
        # holds only the few orders in flight or stuck.
        Index("ix_orders_pending", "updated_at", postgresql_where=text("status = 'PENDING'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # RESTRICT: money records outlive accounts; a user with orders cannot just vanish.
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), index=True, nullable=False
    )
    status: Mapped[str] = mapped_column(
        String(32), nullable=False, default=OrderStatus.PENDING.value
    )
    total_amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    payment_method: Mapped[str] = mapped_column(String(32), nullable=False)
    payment_transaction_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _now_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    user: Mapped[User] = relationship(back_populates="orders")
    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="OrderItem.id",
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy reads it once)

    def __repr__(self) -> str:
        return f"Order(id={self.id}, status={self.status}, total={self.total_amount})"


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="ck_order_items_quantity_positive"),
        CheckConstraint("unit_price >= 0", name="ck_order_items_price_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True, nullable=False
    )
    product_id: Mapped[str] = mapped_column(String(64), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False)

    order: Mapped[Order] = relationship(back_populates="items")


class OutboxEvent(Base):
    """An event recorded in the same transaction as the change it describes.

    The transactional outbox: a message is never published for a change that rolled
    back, and never lost for one that committed. Whoever publishes a row (the relay,
    or the API's publish-right-after-commit fast path) locks it with
    ``SELECT … FOR UPDATE SKIP LOCKED``, publishes to `destination` with the row's
    id as AMQP ``message_id`` (consumers deduplicate on it), then sets `published_at`.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # The relay's query: the oldest unpublished events. A partial index stays tiny.
        Index(
            "ix_outbox_unpublished",
            "created_at",
            postgresql_where=text("published_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    aggregate: Mapped[str] = mapped_column(String(50), nullable=False)  # "order", "user", "post"
    aggregate_id: Mapped[str] = mapped_column(String(64), nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)  # "ORDER_CREATED", …
    # A queue name (default exchange) or an exchange name; see labkit.shop.infra.messaging.
    destination: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now_column()
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __repr__(self) -> str:
        state = "published" if self.published_at else "pending"
        return f"OutboxEvent({self.event_type} {self.aggregate}:{self.aggregate_id}, {state})"


class ProcessedMessage(Base):
    """Message ids a consumer has handled: the idempotency record.

    Insert it in the same transaction as the consumer's own writes; a redelivered
    message then hits the primary key and is acknowledged without being applied twice.
    """

    __tablename__ = "processed_messages"

    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(100), nullable=False, default="default")
    processed_at: Mapped[datetime] = _now_column()


class AnalyticsCounter(Base):
    """A named running count (orders_created, revenue_cents, …) fed by events."""

    __tablename__ = "analytics_counters"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default=text("0")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )
