"""pytest fixtures for the shop, on top of labkit's service fixtures.

Load them as a plugin (``-p labkit.shop.testing.fixtures`` on the command line or in
``addopts``, or ``pytest_plugins`` in a root conftest) and use them in tests or
``%%ipytest`` cells:

    def test_sign_up(shop_client, shop_session, amqp_channel, amqp_queue):
        queue = amqp_queue("email-queue")
        response = shop_client.post("/api/users", json={...})
        ...

shop_settings    ShopSettings on the live services, cheap password hashing, short timeouts
shop_downstream  fake inventory + payment over real HTTP, reset for each test
shop_app         the FastAPI app (one per process; its schema migrated)
shop_client      a TestClient on a clean shop: empty tables, empty Redis, reset fakes
shop_session     a Session on the shop's database, for arranging data and checking rows
shop_db_session  labkit's rolled-back `db_session`, on a database with the shop schema
make_shop_app    factory for an app with other settings: make_shop_app(amqp_url=…)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from labkit.services import Endpoint

if TYPE_CHECKING:
    # The shop, FastAPI and the fakes are imported when a shop fixture first runs, not
    # when pytest loads this plugin: lessons and tests that never touch the shop don't
    # pay for them.
    from fastapi import FastAPI
    from sqlalchemy.orm import Session

    from labkit.shop.settings import ShopSettings
    from labkit.shop.testing.fakes import FakeDownstream

__all__ = [
    "make_shop_app",
    "shop_app",
    "shop_clean",
    "shop_client",
    "shop_db_session",
    "shop_downstream",
    "shop_fakes_server",
    "shop_session",
    "shop_settings",
]


@pytest.fixture(scope="session")
def shop_fakes_server() -> Iterator[FakeDownstream]:
    """The fakes' servers, started once per session (use `shop_downstream` in tests)."""
    from labkit.shop.testing.fakes import FakeDownstream

    with FakeDownstream() as fakes:
        yield fakes


@pytest.fixture
def shop_downstream(shop_fakes_server: FakeDownstream) -> FakeDownstream:
    """The fake inventory and payment services the shop calls, with fresh state."""
    shop_fakes_server.reset()
    return shop_fakes_server


@pytest.fixture(scope="session")
def shop_settings(
    postgres: Endpoint, redis: Endpoint, rabbitmq: Endpoint, shop_fakes_server: FakeDownstream
) -> ShopSettings:
    """Settings on the live services and the fakes, with test-sized costs and timeouts.

    Each server is reached through this process's `labkit.faults` proxy to it, on every
    backend (`outages.through_fault_layer`), so `database_outage` and `outages.frozen`
    reach the shop; the `redis_client` and `amqp_*` fixtures go direct, as an observer.
    """
    from labkit.shop.settings import ShopSettings
    from labkit.shop.testing.helpers import TEST_TIMEOUTS
    from labkit.shop.testing.outages import through_fault_layer

    return ShopSettings(
        database_url=through_fault_layer(postgres).url,
        redis_url=through_fault_layer(redis).url,
        amqp_url=through_fault_layer(rabbitmq).url,
        password_hash_profile="fast",
        **shop_fakes_server.settings(),
        **TEST_TIMEOUTS,
    )


@pytest.fixture(scope="session")
def make_shop_app(shop_settings: ShopSettings) -> Iterator[Callable[..., FastAPI]]:
    """Build shop apps with settings overridden, closed at the end of the session."""
    from labkit.shop.app import create_app
    from labkit.shop.settings import ShopSettings
    from labkit.shop.testing.helpers import migrate_once

    built: list[FastAPI] = []

    def make(**overrides: Any) -> FastAPI:
        migrate_once(shop_settings.database_url)
        app = create_app(ShopSettings(**{**shop_settings.model_dump(), **overrides}))
        built.append(app)
        return app

    yield make
    for app in built:
        app.state.shop.close()


@pytest.fixture(scope="session")
def shop_app(make_shop_app: Callable[..., FastAPI]) -> FastAPI:
    """The shop app on the live services (built once; its schema migrated)."""
    return make_shop_app()


@pytest.fixture
def shop_clean(shop_app: FastAPI, shop_downstream: FakeDownstream) -> None:
    """Empty shop tables and Redis database, fakes reset: a test starts from nothing."""
    from labkit.shop.testing.helpers import reset_shop_data

    shop = shop_app.state.shop
    reset_shop_data(shop.engine)
    shop.redis.flushdb()


@pytest.fixture
def shop_client(shop_app: FastAPI, shop_clean: None) -> Iterator[Any]:
    """A TestClient on the shop, which starts with no data, no cache, fresh fakes."""
    from labkit.shop.testing.helpers import client_for

    client = client_for(shop_app)
    yield client
    client.close()


@pytest.fixture
def shop_session(shop_app: FastAPI, shop_clean: None) -> Iterator[Session]:
    """A session on the shop's database (clean at the start of the test).

    The app commits through its own connections: call ``shop_session.expire_all()``
    before re-reading an object this session has already loaded.
    """
    with shop_app.state.shop.sessions() as session:
        yield session


@pytest.fixture
def shop_db_session(shop_clean: None, db_session: Session) -> Session:
    """labkit's `db_session` (everything rolled back after the test) on empty shop tables.

    For model-level tests that need no app: commits go to a SAVEPOINT, nothing stays.
    """
    return db_session
