"""labkit.shop.testing.databases on the live PostgreSQL: what other connections see."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm.exc import StaleDataError

from labkit.shop.data import User, session_factory, transaction
from labkit.shop.testing.databases import (
    backend_pid,
    create_committed_user,
    delete_users,
    name_of,
    rename_while_locked,
    updates_sent,
    users_with_email,
)


@pytest.fixture
def ada(engine: Engine):
    user_id = create_committed_user(engine, "Ada")
    yield user_id
    delete_users(engine, [user_id])


def test_a_committed_user_is_seen_by_name_and_address_and_deleted(engine: Engine) -> None:
    user_id = create_committed_user(engine, "Grace Hopper")
    with session_factory(engine)() as session:
        email = session.get(User, user_id).email
    assert email.startswith("grace-hopper-")
    assert (name_of(engine, user_id), users_with_email(engine, email.upper())) == ("Grace Hopper", 1)
    assert delete_users(engine, [user_id]) == 1
    assert (name_of(engine, user_id), users_with_email(engine, email)) == (None, 0)


def test_a_rollback_is_invisible_to_the_helpers(engine: Engine) -> None:
    email = f"never-{uuid.uuid4().hex[:8]}@example.com"
    with pytest.raises(ValueError), transaction(session_factory(engine)) as session:
        session.add(User(email=email, name="Never", password_hash="x"))
        session.flush()
        assert users_with_email(engine, email) == 0  # not committed yet: other connections see nothing
        raise ValueError
    assert users_with_email(engine, email) == 0


def test_updates_sent_records_the_version_check_and_stops_after_the_block(engine, ada) -> None:
    factory = session_factory(engine)
    with updates_sent(engine) as sent, factory() as session:
        session.get(User, ada).name = "Ada Lovelace"
        session.commit()
    assert len(sent) == 1 and "users.version" in sent[0][0]
    with factory() as session:
        session.execute(update(User).where(User.id == ada).values(name="Ada"))
        session.commit()
    assert len(sent) == 1


def test_two_sessions_have_two_server_processes(engine) -> None:
    factory = session_factory(engine)
    with factory() as first, factory() as second:
        assert backend_pid(first) != backend_pid(second)


def test_the_second_writer_waits_for_the_lock_then_is_rejected(engine, ada) -> None:
    race = rename_while_locked(engine, ada, "Ada Lovelace", "Ada (admin)")
    assert race.second_waited
    assert race.second_outcome.startswith(StaleDataError.__name__)
    assert race.name == "Ada Lovelace"
