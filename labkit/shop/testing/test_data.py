"""Test data on the shop's database: what is left, unique addresses, code that commits.

    >>> from labkit.shop.testing.test_data import rows_left, unique_email, publish_post

Lesson 11 (test data) asks the same questions many times: what did a test leave behind,
seen as the next test sees it (`rows_left`, from a fresh connection); which address can
no other test, worker or run pick (`unique_email`); and what the code under test writes
on its own, committed in one transaction with an outbox event (`publish_post`,
`place_order`). `TrackedDataManager` is the seed's TestDataManager (track what you
create, delete it in reverse order) with addresses from uuid4 instead of the clock.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from labkit.shop.data import Order, OrderItem, Post, User, session_factory
from labkit.shop.infra import record_event

NOT_A_REAL_HASH = "not-a-real-hash"  # no test of lesson 11 logs in; add_user hashes for those


def rows_left(engine: Engine, column: InstrumentedAttribute[Any], values: Any) -> int:
    """How many rows have `column` in `values`, seen from a fresh connection.

    A fresh connection is what the next test is: it sees only what was committed. The
    table is the column's own (``rows_left(engine, User.email, [address])``).
    """
    with engine.connect() as connection:
        query = select(func.count()).select_from(column.class_).where(column.in_(list(values)))
        return int(connection.scalar(query) or 0)


def unique_email(label: str = "test") -> str:
    """An address no other test, worker or run picks: random (uuid4), not the clock."""
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


def publish_post(session: Session, author_id: uuid.UUID, title: str) -> uuid.UUID:
    """Code under test: a post and its `new_post` outbox event, committed together."""
    post = Post(id=uuid.uuid4(), author_id=author_id, title=title, content="…")
    session.add(post)
    record_event(
        session,
        aggregate="post",
        aggregate_id=post.id,
        event_type="new_post",
        destination="notifications",
        payload={"type": "new_post", "postId": str(post.id)},
    )
    session.commit()
    return post.id


def place_order(session: Session, user_id: uuid.UUID) -> uuid.UUID:
    """Code under test: an order with one item and its ORDER_CREATED event, committed together."""
    order = Order(
        id=uuid.uuid4(), user_id=user_id, total_amount=Decimal("9.99"), payment_method="card"
    )
    order.items.append(OrderItem(product_id="book-1", quantity=1, unit_price=Decimal("9.99")))
    session.add(order)
    record_event(
        session,
        aggregate="order",
        aggregate_id=order.id,
        event_type="ORDER_CREATED",
        destination="order-events",
        payload={"orderId": str(order.id)},
    )
    session.commit()
    return order.id


class TrackedDataManager:
    """The seed's TestDataManager, with uuid addresses: track what you create, delete it
    in reverse order (children were created after their parents, so they go first).

    It deletes only what it created itself: rows the code under test wrote (an outbox
    event) stay, and a RESTRICT foreign key (an order's user) stops the clean-up.
    """

    def __init__(self, engine: Engine) -> None:
        self.sessions = session_factory(engine)
        self.created_records: list[tuple[type[User | Post], uuid.UUID]] = []

    def create_test_user(self, **overrides: Any) -> User:
        fields = {"email": unique_email(), "name": "Test User",
                  "password_hash": NOT_A_REAL_HASH, **overrides}
        user = User(**fields)
        self._commit(user)
        self.created_records.append((User, user.id))
        return user

    def create_test_post(self, author: User, **overrides: Any) -> Post:
        fields = {"title": "Test Post", "content": "Some content", **overrides}
        post = Post(author_id=author.id, **fields)
        self._commit(post)
        self.created_records.append((Post, post.id))
        return post

    def cleanup(self) -> None:
        for model, record_id in reversed(self.created_records):
            with self.sessions.begin() as session:
                session.execute(delete(model).where(model.id == record_id))
        self.created_records = []

    def _commit(self, record: User | Post) -> None:
        with self.sessions() as session:
            session.add(record)
            session.commit()
