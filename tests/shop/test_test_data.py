"""labkit.shop.testing.test_data on the live database: what lesson 11 counts and creates."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError

from labkit.shop.data import Order, OrderItem, OutboxEvent, Post, User, session_factory
from labkit.shop.testing.test_data import (
    TrackedDataManager,
    place_order,
    publish_post,
    rows_left,
    unique_email,
)


def test_unique_emails_differ_and_carry_their_label() -> None:
    emails = {unique_email("ada") for _ in range(1000)}
    assert len(emails) == 1000
    assert all(email.startswith("ada-") and email.endswith("@example.com") for email in emails)


def test_the_manager_leaves_the_outbox_event_of_a_post_the_code_published(engine: Engine) -> None:
    manager = TrackedDataManager(engine)
    author = manager.create_test_user()
    with session_factory(engine)() as session:
        post_id = publish_post(session, author.id, "Hello")
    assert rows_left(engine, User.id, [author.id]) == 1
    assert rows_left(engine, OutboxEvent.aggregate_id, [str(post_id)]) == 1

    manager.cleanup()

    assert rows_left(engine, User.id, [author.id]) == 0
    assert rows_left(engine, Post.id, [post_id]) == 0  # ON DELETE CASCADE
    assert rows_left(engine, OutboxEvent.aggregate_id, [str(post_id)]) == 1  # no foreign key
    assert manager.created_records == []
    with engine.begin() as connection:
        connection.execute(delete(OutboxEvent).where(OutboxEvent.aggregate_id == str(post_id)))


def test_an_order_stops_the_managers_cleanup(engine: Engine) -> None:
    manager = TrackedDataManager(engine)
    buyer = manager.create_test_user()
    manager.create_test_post(buyer)
    with session_factory(engine)() as session:
        order_id = place_order(session, buyer.id)
    assert rows_left(engine, OrderItem.order_id, [order_id]) == 1

    with pytest.raises(IntegrityError, match="orders"):
        manager.cleanup()  # orders.user_id is ON DELETE RESTRICT

    assert rows_left(engine, User.id, [buyer.id]) == 1
    with engine.begin() as connection:
        connection.execute(delete(OutboxEvent).where(OutboxEvent.aggregate_id == str(order_id)))
        connection.execute(delete(Order).where(Order.id == order_id))
        connection.execute(delete(User).where(User.id == buyer.id))


def test_rows_left_counts_only_committed_rows(engine: Engine, db_session) -> None:
    email = unique_email()
    db_session.add(User(email=email, name="Ada", password_hash="x"))
    db_session.flush()
    assert rows_left(engine, User.email, [email]) == 0
