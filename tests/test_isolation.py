"""db_session really isolates tests, and labkit.isolation measures what it claims to.

No speed is asserted anywhere: timings depend on the machine. What must hold on every
machine is that a committed write does not reach the next test, and that the
measurement runs every strategy, cleans up after itself, and catches a leaky one.
"""

from __future__ import annotations

import math
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from labkit import isolation, services
from labkit.isolation import STRATEGIES, IsolationError, measure_isolation, summarize
from labkit.sql import engine_for

TABLE = f"isolation_probe_{uuid.uuid4().hex[:8]}"
written: dict[str, str] = {}


@pytest.fixture(scope="module")
def probe_table(db_engine: Engine) -> Iterator[str]:
    """A real, committed table that outlives each test (unlike the rows in it)."""
    with db_engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {TABLE} (note text NOT NULL)"))
    yield TABLE
    with db_engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {TABLE}"))


def count_notes(engine: Engine, note: str) -> int:
    """Rows with this note, seen from a fresh connection, as another test or the app sees them."""
    with engine.connect() as connection:
        return connection.scalar(text(f"SELECT count(*) FROM {TABLE} WHERE note = :n"), {"n": note})


class TestDbSessionIsolation:
    """In file order: the first test commits, the next ones must not see it."""

    def test_a_commit_is_visible_inside_the_test(self, db_session, db_engine, probe_table):
        note = f"committed-{uuid.uuid4().hex[:8]}"
        db_session.execute(text(f"INSERT INTO {probe_table} VALUES (:n)"), {"n": note})
        db_session.commit()
        written["note"] = note
        assert db_session.scalar(text(f"SELECT count(*) FROM {probe_table} WHERE note = :n"), {"n": note}) == 1
        assert count_notes(db_engine, note) == 0, "the commit escaped the test's transaction"

    def test_the_next_test_does_not_see_it(self, db_session, db_engine, probe_table):
        if "note" not in written:
            pytest.skip("run together with the test that writes the row")
        assert db_session.scalar(text(f"SELECT count(*) FROM {probe_table}")) == 0
        assert count_notes(db_engine, written["note"]) == 0

    def test_rollback_after_commit_keeps_the_committed_part(self, db_session, probe_table):
        """The code under test may roll back: only its own SAVEPOINT is undone."""
        db_session.execute(text(f"INSERT INTO {probe_table} VALUES ('kept')"))
        db_session.commit()
        db_session.execute(text(f"INSERT INTO {probe_table} VALUES ('undone')"))
        db_session.rollback()
        notes = db_session.scalars(text(f"SELECT note FROM {probe_table}")).all()
        assert notes == ["kept"]

    def test_and_nothing_of_that_reaches_the_table(self, db_engine, probe_table):
        with db_engine.connect() as connection:
            assert connection.scalar(text(f"SELECT count(*) FROM {probe_table}")) == 0


@pytest.fixture(scope="module")
def strategies(db_engine: Engine) -> list[str]:
    """Every strategy this run's database user may run: a tenant's (`labkit up`, CI) may
    not create databases, so the template one is left out there."""
    if isolation.may_create_databases(db_engine):
        return list(STRATEGIES)
    return [name for name in STRATEGIES if name != "template database"]


@pytest.fixture(scope="module")
def costs(db_engine: Engine, strategies: list[str]):
    return measure_isolation(db_engine, rounds=5, warmup=1, strategies=strategies)


def test_every_strategy_has_one_row_per_round(costs, strategies):
    assert list(costs.columns[:3]) == ["strategy", "round", "seconds"]
    assert costs.groupby("strategy").size().to_dict() == {name: 5 for name in strategies}


def test_times_are_positive_and_add_up(costs):
    for column in ("seconds", "setup_seconds", "teardown_seconds", "body_seconds"):
        assert (costs[column] > 0).all() and costs[column].map(math.isfinite).all(), column
    assert (costs.seconds - costs.setup_seconds - costs.teardown_seconds).abs().max() < 1e-9


def test_summary_has_one_row_per_strategy(costs, strategies):
    summary = summarize(costs)
    assert set(summary.index) == set(strategies)
    assert (summary["p95 ms"] >= summary["median ms"]).all()


def test_measuring_leaves_no_schema_or_database_behind(costs, db_engine):
    with db_engine.connect() as connection:
        schemas = connection.scalar(
            text("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'labkit_isolation_%'")
        )
        databases = connection.scalar(
            text("SELECT count(*) FROM pg_database WHERE datname LIKE 'labkit_isolation_%'")
        )
    assert (schemas, databases) == (0, 0)


@contextmanager
def seed_fixture_session(engine, schema, template) -> Iterator[Session]:
    """The seed's fixture: yield a session, then rollback() — after the test committed."""
    session = Session(engine)
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def test_a_leaky_strategy_is_caught(db_engine, monkeypatch):
    monkeypatch.setitem(isolation.STRATEGY_SESSIONS, "seed rollback", seed_fixture_session)
    with pytest.raises(IsolationError, match="'seed rollback' left rows behind"):
        measure_isolation(db_engine, rounds=2, warmup=0, strategies=["seed rollback"])


def test_unknown_strategy_is_refused(db_engine):
    with pytest.raises(ValueError, match="unknown strategies"):
        measure_isolation(db_engine, strategies=["snapshot"])


def test_may_create_databases_says_whether_the_template_strategy_runs(db_engine):
    allowed = isolation.may_create_databases(db_engine)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        costs = measure_isolation(db_engine, rounds=1, warmup=0, strategies=["template database"])
    assert allowed == (not costs.empty)
    assert allowed != any("may not create databases" in str(w.message) for w in caught)


def test_a_tenants_role_may_not_create_databases(postgres):
    """Lesson 01 asks first: under `labkit up` its kernel is a tenant, without CREATEDB."""
    if postgres.backend not in ("local", "docker"):
        pytest.skip("a tenant is made here on a server this run owns (superuser)")
    admin = services.TenantAdmin(postgres=postgres.dsn)
    with services.create_tenant(admin, services=("postgres",)) as tenant:
        engine = engine_for(tenant["postgres"].url)
        try:
            assert not isolation.may_create_databases(engine)
        finally:
            engine.dispose()
    assert isolation.may_create_databases(engine_for(postgres.url))
