"""labkit.services on whichever backend LABKIT_BACKEND selects (CI runs this file on each)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pika
import psycopg
import pytest
import redis as redis_lib
from sqlalchemy import text

from labkit import services
from labkit.services import local_records, redact, sweep_local

BACKEND = os.environ.get("LABKIT_BACKEND", "auto")


def test_a_service_starts_once_per_process():
    first = services.get("postgres")
    assert services.get("postgres") is first


def test_postgres_answers_with_utf8(db_engine):
    with db_engine.connect() as conn:
        assert conn.execute(text("show server_encoding")).scalar() == "UTF8"


def test_redis_answers(redis):
    client = redis_lib.Redis.from_url(redis.url)
    assert client.ping()


def test_rabbitmq_answers(rabbitmq):
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    assert connection.is_open
    connection.close()


def test_credentials_are_not_defaults(postgres, rabbitmq):
    if postgres.backend == "external":
        pytest.skip("an external server's credentials are whatever its owner chose")
    assert postgres.password and postgres.password not in ("postgres", "test", "password")
    assert rabbitmq.username != "guest"


def test_services_listen_on_loopback_only(postgres, redis, rabbitmq):
    if postgres.backend == "external":
        pytest.skip("external servers are wherever their URLs say")
    assert {postgres.host, redis.host, rabbitmq.host} == {"127.0.0.1"}


def test_printed_urls_hide_passwords(postgres):
    if postgres.password:
        assert postgres.password not in postgres.safe_url
        assert postgres.password not in str(postgres)


def test_paused_postgres_times_out_then_recovers(postgres):
    if postgres.backend == "external":
        pytest.skip("labkit cannot pause a server it does not run")
    params = {"host": postgres.host, "port": postgres.port, "user": postgres.username,
              "password": postgres.password, "dbname": "labkit", "connect_timeout": 1}
    with services.paused("postgres"), pytest.raises(psycopg.OperationalError):
        psycopg.connect(**params)
    with psycopg.connect(**params) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


class TestBackendChoice:
    def test_url_in_environment_wins(self, monkeypatch):
        monkeypatch.setenv("LABKIT_BACKEND", "auto")
        monkeypatch.setenv("LABKIT_REDIS_URL", "redis://127.0.0.1:6379/3")
        assert services.backend_for("redis") == ("external", "LABKIT_REDIS_URL")

    def test_amqp_url_is_an_alias_for_rabbitmq(self, monkeypatch):
        monkeypatch.setenv("LABKIT_BACKEND", "auto")
        monkeypatch.delenv("LABKIT_RABBITMQ_URL", raising=False)
        monkeypatch.setenv("LABKIT_AMQP_URL", "amqp://u:p@127.0.0.1:5672/%2F")
        assert services.backend_for("rabbitmq") == ("external", "LABKIT_AMQP_URL")
        monkeypatch.setenv("LABKIT_RABBITMQ_URL", "amqp://u:p@127.0.0.1:5673/%2F")
        assert services.backend_for("rabbitmq") == ("external", "LABKIT_RABBITMQ_URL")

    def test_per_service_override_beats_global(self, monkeypatch):
        monkeypatch.setenv("LABKIT_BACKEND", "docker")
        monkeypatch.setenv("LABKIT_REDIS_BACKEND", "local")
        assert services.backend_for("redis")[0] == "local"

    def test_unknown_backend_is_a_clear_error(self, monkeypatch):
        monkeypatch.setenv("LABKIT_BACKEND", "kubernetes")
        with pytest.raises(services.ServiceError, match="auto, docker, local, external"):
            services.backend_for("postgres")

    def test_unknown_service_names_the_known_ones(self):
        with pytest.raises(services.ServiceError, match="postgres"):
            services.get("kafka")


class TestExternalUrls:
    def test_plain_postgres_url_gets_the_psycopg_driver(self):
        endpoint = services.specs()["postgres"].from_url("postgresql://u:p@db.example:6543/app")
        assert endpoint.url == "postgresql+psycopg://u:p@db.example:6543/app"
        assert (endpoint.host, endpoint.port, endpoint.backend) == ("db.example", 6543, "external")

    def test_wrong_scheme_says_what_was_expected(self):
        with pytest.raises(services.ServiceError, match="must start with amqp://"):
            services.specs()["rabbitmq"].from_url("http://127.0.0.1:5672")

    def test_missing_host_is_rejected(self):
        with pytest.raises(services.ServiceError, match="no host"):
            services.specs()["redis"].from_url("redis:///0")

    def test_redact_masks_only_the_password(self):
        assert redact("amqp://me:secret@h:1/%2F") == "amqp://me:***@h:1/%2F"


CHILD = """
import sys
from labkit import services
endpoint = services.get(sys.argv[1])
print(endpoint.port, flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
@pytest.mark.parametrize("service", ["postgres", "redis", "rabbitmq"])
def test_a_killed_owner_leaks_nothing(service):
    """SIGKILL a process (as a crashed kernel) and check the next start sweeps its server."""
    if services.backend_for(service)[0] == "external":
        pytest.skip("nothing is started on the external backend, so nothing can leak")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, service],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    port = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert _port_open(port), "the server should outlive its killed owner until swept"

    backend = services.backend_for(service)[0]
    if backend == "local":
        sweep_local()
        assert not [r for r in local_records() if r.owner_pid == child.pid]
    else:
        from labkit.services import docker_client, sweep_containers

        sweep_containers(docker_client())
    assert _wait_closed(port), f"{service} on port {port} still answers after the sweep"


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_closed(port: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _port_open(port):
            return True
        time.sleep(0.1)
    return False



def test_pausing_freezes_connections_already_open(postgres):
    """An outage must hit open connections too (pooled clients), not only new ones."""
    if postgres.backend == "external":
        pytest.skip("labkit cannot pause a server it does not run")
    import threading

    params = {"host": postgres.host, "port": postgres.port, "user": postgres.username,
              "password": postgres.password, "dbname": "labkit", "autocommit": True}
    with psycopg.connect(**params) as conn:
        answers = []
        query = threading.Thread(target=lambda: answers.append(conn.execute("select 1").fetchone()))
        with services.paused("postgres"):
            query.start()
            query.join(timeout=1)
            assert query.is_alive() and not answers, "a paused server answered an open connection"
        query.join(timeout=10)
        assert answers == [(1,)], "the query should complete once the server resumes"


@pytest.mark.docker
def test_auto_falls_back_to_local_when_the_image_cannot_be_had():
    """Offline venue: an engine answers but the image can't be pulled; binaries exist."""
    from labkit.services import engine_answers

    if not engine_answers():
        pytest.skip("needs a Docker engine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_REDIS")}
    env.update(LABKIT_BACKEND="auto", LABKIT_REDIS_IMAGE="labkit/no-such-image:0")
    result = subprocess.run(
        [sys.executable, "-c", "from labkit import services; print(services.get('redis').backend)"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.stdout.strip().endswith("local"), result.stdout + result.stderr
    assert "using local binaries for redis instead" in result.stdout
