"""labkit's pytest plugin: live-service fixtures, the same in tests/ and %%ipytest cells.

Registered by a ``pytest11`` entry point, so installing labkit is enough.

Services live per *process*, not per pytest session: each ``%%ipytest`` cell is a new
session, and restarting a container every cell would cost seconds. Isolation between
tests is cheap instead: a SAVEPOINT rolled back for SQL, a flushed database for Redis,
queues deleted after each test for RabbitMQ.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from labkit import services
from labkit.services import Endpoint

if TYPE_CHECKING:
    # Imported where a fixture runs, not when pytest loads the plugin: a project that
    # uses only `postgres` should not pay for pika and SQLAlchemy's ORM at every start.
    import pika
    import redis as redis_lib
    from pika.adapters.blocking_connection import BlockingChannel
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labkit")
    group.addoption(
        "--labkit-backend",
        choices=["auto", "docker", "local", "external", "tenant"],
        help="where live services come from (default: LABKIT_BACKEND or auto)",
    )


def pytest_configure(config: pytest.Config) -> None:
    backend = config.getoption("--labkit-backend", default=None)
    if backend:
        os.environ["LABKIT_BACKEND"] = backend


def pytest_report_header(config: pytest.Config) -> str:
    chosen = []
    for name in ("postgres", "redis", "rabbitmq"):
        try:
            backend, reason = services.check(name)
        except services.ServiceError:
            backend, reason = "unavailable", "see `labkit doctor`"
        chosen.append(f"{name}={backend} ({reason})")
    return "labkit services: " + ", ".join(chosen)


# -- endpoints: started once per process --------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Endpoint:
    """The PostgreSQL endpoint (started on first use, reused for the whole process)."""
    return services.get("postgres")


@pytest.fixture(scope="session")
def redis() -> Endpoint:
    """The Redis endpoint (started on first use, reused for the whole process)."""
    return services.get("redis")


@pytest.fixture(scope="session")
def rabbitmq() -> Endpoint:
    """The RabbitMQ endpoint (started on first use, reused for the whole process)."""
    return services.get("rabbitmq")


# -- SQL ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def db_engine(postgres: Endpoint) -> Engine:
    """A SQLAlchemy engine on the live PostgreSQL, shared by the process."""
    from labkit.sql import engine_for

    return engine_for(postgres.url)


@pytest.fixture
def db_session(db_engine: Engine) -> Iterator[Session]:
    """A session whose every write, commits included, is rolled back after the test."""
    from labkit.sql import rolled_back_session

    with rolled_back_session(db_engine) as session:
        yield session


# -- Redis --------------------------------------------------------------------------


@pytest.fixture
def redis_client(redis: Endpoint) -> Iterator[redis_lib.Redis]:
    """A client on an emptied Redis database: nothing one test caches is seen by the next.

    The database in the endpoint URL is flushed before and after the test, so point an
    external LABKIT_REDIS_URL at a database index you can spare. A tenant's Redis is
    never flushed: only its own keys (its ``key_prefix``) are deleted, as the other
    tenants' keys share the database.
    """
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis.url, decode_responses=True)

    def empty() -> None:
        if redis.extra.get("key_prefix"):
            services.clear_tenant_keys(redis)
        else:
            client.flushdb()

    empty()
    try:
        yield client
    finally:
        empty()
        client.close()


# -- RabbitMQ -----------------------------------------------------------------------


@pytest.fixture
def amqp_connection(rabbitmq: Endpoint) -> Iterator[pika.BlockingConnection]:
    """A fresh AMQP connection for the test (pika's BlockingConnection is not shareable)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    try:
        yield connection
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def amqp_channel(amqp_connection: pika.BlockingConnection) -> BlockingChannel:
    """A channel on the test's own connection. Declare queues with `amqp_queue`."""
    return amqp_connection.channel()


@pytest.fixture
def amqp_queue(amqp_connection: pika.BlockingConnection) -> Iterator[Callable[..., str]]:
    """Declare queues for this test: empty at the start, deleted after.

    ``amqp_queue()`` makes a uniquely named queue; ``amqp_queue("email-queue")`` takes a
    fixed name that the code under test uses (it is purged first).
    """
    channel = amqp_connection.channel()
    declared: list[str] = []

    def declare(name: str | None = None, **arguments) -> str:
        queue = name or f"test-{uuid.uuid4().hex[:10]}"
        channel.queue_declare(queue=queue, durable=arguments.pop("durable", True), **arguments)
        channel.queue_purge(queue)
        declared.append(queue)
        return queue

    yield declare
    cleanup = amqp_connection.channel() if not channel.is_open else channel
    for queue in declared:
        cleanup.queue_delete(queue)


@pytest.fixture
def unique_id(request: pytest.FixtureRequest) -> str:
    """A short id unique to this test run, for names that must not collide."""
    return f"{request.node.name[:20]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


def __getattr__(name: str) -> object:
    # Lessons of labkit 0.1 imported these from the plugin; they live in labkit.sql now.
    if name in ("engine_for", "rolled_back_session"):
        import warnings

        from labkit import sql

        warnings.warn(
            f"labkit.plugin.{name} moved to labkit.sql.{name}", DeprecationWarning, stacklevel=2
        )
        return getattr(sql, name)
    raise AttributeError(f"module 'labkit.plugin' has no attribute {name!r}")
