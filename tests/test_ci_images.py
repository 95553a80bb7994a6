"""The images `ci/images/build` makes honour the official images' contracts.

Proof: testcontainers' own modules, unchanged, start each image and a real client
talks to it through the published port. Skipped where no engine answers or the
images were not built (elsewhere the official images are used and need no proof).
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGES = {
    "postgres": "labkit/postgres:15-debian",
    "redis": "labkit/redis:7-debian",
    "rabbitmq": "labkit/rabbitmq:3-debian",
}


def _image_or_skip(service: str) -> str:
    try:
        import docker
        from docker.errors import DockerException, ImageNotFound
    except ImportError:
        pytest.skip("docker-py is not installed")
    try:
        client = docker.from_env(timeout=5)
        client.images.get(IMAGES[service])
    except ImageNotFound:
        pytest.skip(f"{IMAGES[service]} not built — run `bash ci/images/build`")
    except DockerException:
        pytest.skip("no Docker engine answers — run `bash ci/docker-engine`")
    # Ryuk's image can't be pulled where these images are needed.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    return IMAGES[service]


@pytest.fixture(autouse=True)
def _reach_containers_on_loopback(monkeypatch):
    """What `ci/images/build` exports, applied to testcontainers' already-read config.

    Where the engine runs on this machine, containers are reached on 127.0.0.1 —
    testcontainers guesses otherwise on machines that have a /.dockerenv.
    """
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    if os.environ.get("DOCKER_HOST", "unix://").startswith("unix://"):
        monkeypatch.setattr(
            testcontainers_config, "connection_mode_override", ConnectionMode.docker_host
        )
        monkeypatch.setattr(testcontainers_config, "tc_host_override", "127.0.0.1")


@contextmanager
def _running(container):
    """The container started (and its time to ready shown with -s), removed after."""
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        container.start()
    print(f"{container.image} ready in {time.perf_counter() - began:.1f}s")
    try:
        yield container
    finally:
        container.stop()


def test_postgres_image_works_with_postgres_container():
    import psycopg
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        _image_or_skip("postgres"),
        username="learner",
        password="s3cret",
        dbname="labkit",
        driver="psycopg",
    ).with_command("postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    with _running(container):
        port = container.get_exposed_port(5432)
        with psycopg.connect(
            host="127.0.0.1", port=port, user="learner", password="s3cret", dbname="labkit"
        ) as conn:
            assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                host="127.0.0.1", port=port, user="learner", password="wrong", dbname="labkit"
            )


def test_redis_image_works_with_redis_container():
    import redis
    from testcontainers.community.redis import RedisContainer

    with _running(RedisContainer(_image_or_skip("redis"), password="x")) as container:
        port = container.get_exposed_port(6379)
        client = redis.Redis(host="127.0.0.1", port=port, password="x")
        assert client.set("k", "v") and client.get("k") == b"v"
        assert client.config_get("save") == {"save": ""}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, password="wrong").ping()


def test_rabbitmq_image_works_with_rabbitmq_container():
    import pika
    from testcontainers.community.rabbitmq import RabbitMqContainer

    container = RabbitMqContainer(_image_or_skip("rabbitmq"), username="u", password="p")
    with _running(container):
        params = pika.ConnectionParameters(
            "127.0.0.1", container.get_exposed_port(5672), "/", pika.PlainCredentials("u", "p")
        )
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.queue_declare("proof")
        channel.basic_publish("", "proof", b"hello")
        _, _, body = channel.basic_get("proof", auto_ack=True)
        assert body == b"hello"
        connection.close()
