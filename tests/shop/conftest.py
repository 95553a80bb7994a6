"""The shop's fixtures come from the `labkit-shop` pytest11 plugin
(labkit.shop.testing.fixtures), the same ones lessons use in %%ipytest cells; the two
users below, and the buyer of the order tests, are what several test modules start from."""

import pytest
from sqlalchemy import Engine

from labkit.services import Endpoint
from labkit.shop.testing import add_user, auth_header, migrate_once


@pytest.fixture
def ada(shop_session):
    return add_user(shop_session, email="ada@example.com", name="Ada")


@pytest.fixture
def bob(shop_session):
    return add_user(shop_session, email="bob@example.com", name="Bob")


@pytest.fixture
def buyer(shop_session):
    return add_user(shop_session, email="buyer@example.com", name="Buyer")


@pytest.fixture
def as_buyer(shop_settings, buyer):
    return auth_header(shop_settings, buyer.id)


@pytest.fixture
def engine(postgres: Endpoint, db_engine: Engine) -> Engine:
    """The test database's engine, with the shop's migrations applied (once per process)."""
    migrate_once(postgres.url)
    return db_engine
