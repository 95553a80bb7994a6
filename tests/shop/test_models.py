"""The schema's guarantees, checked in PostgreSQL itself (no app involved)."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg import sql
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from labkit import services
from labkit.isolation import may_create_databases
from labkit.shop import ShopSettings
from labkit.shop.data import (
    Base,
    Comment,
    Order,
    OrderItem,
    Post,
    User,
    create_engine_for,
    downgrade,
    upgrade,
)
from labkit.shop.testing import add_comment, add_follow, add_post, add_user


def test_user_post_relationship_and_cascade_delete(shop_db_session):
    session = shop_db_session
    user = add_user(session, email="test@example.com")
    post1 = add_post(session, user, title="First Post")
    post2 = add_post(session, user, title="Second Post")
    add_comment(session, post1, user)

    retrieved = session.scalars(select(User).where(User.id == user.id)).one()
    assert {p.id for p in retrieved.posts} == {post1.id, post2.id}

    session.delete(retrieved)
    session.commit()

    assert session.scalars(select(Post).where(Post.author_id == user.id)).all() == []
    assert session.scalars(select(Comment).where(Comment.author_id == user.id)).all() == []


def test_database_cascades_even_without_the_orm(shop_db_session):
    session = shop_db_session
    author, reader = add_user(session), add_user(session)
    post = add_post(session, author)
    add_comment(session, post, reader)
    add_follow(session, reader, author)

    session.execute(User.__table__.delete().where(User.__table__.c.id == author.id))

    assert session.scalar(select(func.count()).select_from(Comment)) == 0
    assert session.scalar(text("SELECT count(*) FROM followers")) == 0


def test_transaction_rollback_leaves_no_trace(shop_db_session):
    session = shop_db_session
    before = session.scalar(select(func.count()).select_from(User))

    with pytest.raises(ValueError, match="Simulated"), session.begin_nested():
        session.add(User(email="test@example.com", name="Test User", password_hash="x"))
        session.flush()  # the row really reached PostgreSQL…
        raise ValueError("Simulated error")

    assert session.scalar(select(func.count()).select_from(User)) == before  # …and is gone


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("duplicate-email", "uq_users_email_lower"),
        ("self-follow", "ck_followers_not_self"),
        ("zero-quantity", "ck_order_items_quantity_positive"),
        ("delete-user-with-orders", "orders_user_id_fkey"),
    ],
)
def test_constraints_hold_in_the_database(shop_db_session, statement, constraint):
    session = shop_db_session
    user = add_user(session, email="ada@example.com")
    order = Order(user_id=user.id, total_amount=Decimal("1.00"), payment_method="CARD")
    session.add(order)
    session.commit()

    with pytest.raises(IntegrityError, match=constraint), session.begin_nested():
        if statement == "duplicate-email":
            add_user(session, email="ADA@example.com", commit=False)
        elif statement == "self-follow":
            add_follow(session, user, user)
        elif statement == "zero-quantity":
            session.add(OrderItem(order_id=order.id, product_id="p", quantity=0, unit_price=1))
        else:
            session.delete(user)
        session.flush()


def test_money_round_trips_exactly(shop_db_session):
    session = shop_db_session
    user = add_user(session)
    order = Order(
        user_id=user.id, total_amount=Decimal("0.10") + Decimal("0.20"), payment_method="CARD"
    )
    session.add(order)
    session.commit()
    session.expire_all()

    stored = session.get(Order, order.id).total_amount
    assert stored == Decimal("0.30") and isinstance(stored, Decimal)


# -- optimistic locking: two real connections ----------------------------------------


@pytest.mark.parametrize("model", ["user", "order"])
def test_concurrent_update_is_detected_not_lost(shop_app, shop_session, model):
    engine = shop_app.state.shop.engine
    user = add_user(shop_session, name="Original")
    row_id = user.id
    if model == "order":
        order = Order(user_id=user.id, total_amount=Decimal("9.99"), payment_method="CARD")
        shop_session.add(order)
        shop_session.commit()
        row_id = order.id
    kind = User if model == "user" else Order

    with Session(engine) as first, Session(engine) as second:
        mine, theirs = first.get(kind, row_id), second.get(kind, row_id)
        if model == "user":
            mine.name, theirs.name = "Updated by session 1", "Updated by session 2"
        else:
            mine.status, theirs.status = "CONFIRMED", "CANCELLED"
        first.commit()

        with pytest.raises(StaleDataError):
            second.commit()

    shop_session.expire_all()
    stored = shop_session.get(kind, row_id)
    assert stored.version == 2
    assert (stored.name if model == "user" else stored.status) in (
        "Updated by session 1",
        "CONFIRMED",
    )


# -- bounded waits --------------------------------------------------------------------


def test_a_silent_server_is_an_error_within_the_io_timeout(shop_settings):
    settings = ShopSettings(
        **{**shop_settings.model_dump(), "db_statement_timeout": 30.0, "db_io_timeout": 0.5}
    )
    engine = create_engine_for(settings)
    try:
        started = time.monotonic()
        with (
            pytest.raises(OperationalError, match="did not answer within 0.5s"),
            engine.connect() as connection,
        ):
            connection.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 3

        with engine.connect() as connection:  # the pool replaced the closed connection
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_a_slow_statement_is_cancelled_by_the_server(shop_settings):
    settings = ShopSettings(**{**shop_settings.model_dump(), "db_statement_timeout": 0.2})
    engine = create_engine_for(settings)
    try:
        with (
            pytest.raises(OperationalError, match="statement timeout"),
            engine.connect() as connection,
        ):
            connection.execute(text("SELECT pg_sleep(5)"))
    finally:
        engine.dispose()


# -- migrations -----------------------------------------------------------------------


@pytest.fixture
def scratch_database_url(db_engine):
    """An empty database of its own, dropped after the test.

    A tenant's role (under `labkit up`, as in CI) may not create databases: there the
    scratch database is a second tenant's, made with the shared server's admin access.
    """
    if not may_create_databases(db_engine):
        if services.admin_url("postgres") is None:
            pytest.skip("this run's database user may not create databases, and no admin URL "
                        "is set to make one as a tenant")
        with services.create_tenant(services=("postgres",)) as scratch:
            yield scratch["postgres"].url
        return
    database = f"scratch_{uuid.uuid4().hex[:12]}"
    name = sql.Identifier(database)
    libpq_url = db_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    yield db_engine.url.set(database=database).render_as_string(hide_password=False)
    with psycopg.connect(libpq_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))


def test_migrations_build_exactly_the_models_and_undo_cleanly(scratch_database_url):
    upgrade(scratch_database_url)
    engine = create_engine(scratch_database_url)
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        upgrade(scratch_database_url)  # a second run is a no-op

        downgrade(scratch_database_url)
        assert inspect(engine).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()
