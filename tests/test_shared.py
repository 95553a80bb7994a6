"""`labkit up` once, every process a tenant: what a workshop and a CI run rely on.

`labkit up` runs in a private state dir (LABKIT_STATE_DIR) on the local backend; the
processes it serves pick nothing: on the auto backend each becomes a tenant of its
PostgreSQL (a database and role) and RabbitMQ (a vhost and user), and starts a private
redis-server, so lessons' unprefixed keys (``"greeting"``) work unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from labkit import services

TIMEOUT = 300  # a subprocess's bound on a loaded 2-core machine, never a speed target
SWEPT_WITHIN = 60.0  # the daemon sweeps every few seconds; generous under load


def _env(state: Path, **extra: str) -> dict[str, str]:
    """This run's environment without any service choice of its own, plus `extra`."""
    env = {key: value for key, value in os.environ.items()
           if not (key.startswith("LABKIT_")
                   and key.endswith(("_URL", "_BACKEND", "_MANAGEMENT")))}
    env.pop("PYTEST_XDIST_WORKER", None)
    return {**env, services.STATE_ENV: str(state), **extra}


def _labkit(state: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], env=_env(state, **extra),
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`labkit up postgres redis rabbitmq` on the local backend; its state dir."""
    state = tmp_path_factory.mktemp("up-state")
    started = _labkit(state, "up", "postgres", "redis", "rabbitmq", LABKIT_BACKEND="local")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield state
    finally:
        _labkit(state, "down")


def _admin(state: Path) -> services.TenantAdmin:
    recorded = json.loads((state / "up.json").read_text())
    return services.TenantAdmin(**recorded["admin"])


# Run twice at once, as ROLE=a and ROLE=b, each a tenant. They meet at files in SIGNALS:
# both write; a empties its Redis and queue (the fixtures' flush and purge) and drops
# its table while b checks its own data; then a writes again while b empties its own.
TWO_TENANTS = '''
import json
import os
import time
from pathlib import Path

import redis as redis_lib
from sqlalchemy import text

ME = os.environ["ROLE"]
OTHER = {"a": "b", "b": "a"}[ME]
SIGNALS = Path(os.environ["SIGNALS"])


def signal(name):
    (SIGNALS / name).touch()


def wait(name):
    deadline = time.monotonic() + 120
    while not (SIGNALS / name).exists():
        assert time.monotonic() < deadline, f"{ME} waited for {name} in vain"
        time.sleep(0.05)


def write(redis, db_engine, amqp_channel):
    redis_lib.Redis.from_url(redis.url).set("greeting", ME)  # a lesson's unprefixed key
    with db_engine.begin() as conn:
        conn.execute(text("create table if not exists notes (body text)"))
        conn.execute(text("insert into notes values (:me)"), {"me": ME})
    amqp_channel.queue_declare("jobs", durable=True)  # one name in both: each its own vhost
    amqp_channel.confirm_delivery()
    amqp_channel.basic_publish("", "jobs", ME.encode())


def seen(redis, db_engine, amqp_channel):
    greeting = redis_lib.Redis.from_url(redis.url, decode_responses=True).get("greeting")
    with db_engine.connect() as conn:
        exists = conn.execute(text("select to_regclass('notes') is not null")).scalar()
        rows = [r[0] for r in conn.execute(text("select body from notes"))] if exists else []
    queue = amqp_channel.queue_declare("jobs", durable=True)
    return {"greeting": greeting, "rows": rows, "messages": queue.method.message_count}


def empty(request, db_engine):
    request.getfixturevalue("redis_client")        # flushed at set-up
    request.getfixturevalue("amqp_queue")("jobs")  # purged
    with db_engine.begin() as conn:
        conn.execute(text("drop table notes"))


def test_1_both_write(redis, db_engine, amqp_channel, postgres, rabbitmq):
    write(redis, db_engine, amqp_channel)
    signal(f"wrote-{ME}")
    wait(f"wrote-{OTHER}")
    assert seen(redis, db_engine, amqp_channel) == {"greeting": ME, "rows": [ME], "messages": 1}
    (SIGNALS / f"tenant-{ME}.json").write_text(json.dumps({
        "backends": [postgres.backend, redis.backend, rabbitmq.backend],
        "names": [postgres.database, rabbitmq.extra["vhost"]],
        "redis": redis.port,
    }))


def test_2_a_empties_b_keeps(request, redis, db_engine, amqp_channel):
    if ME == "a":
        empty(request, db_engine)
        assert seen(redis, db_engine, amqp_channel) == {"greeting": None, "rows": [],
                                                        "messages": 0}
        signal("emptied-a")
    else:
        wait("emptied-a")
        assert seen(redis, db_engine, amqp_channel) == {"greeting": "b", "rows": ["b"],
                                                        "messages": 1}


def test_3_b_empties_a_keeps(request, redis, db_engine, amqp_channel):
    if ME == "a":
        write(redis, db_engine, amqp_channel)
        signal("wrote-again-a")
        wait("emptied-b")
        assert seen(redis, db_engine, amqp_channel) == {"greeting": "a", "rows": ["a"],
                                                        "messages": 1}
    else:
        wait("wrote-again-a")
        empty(request, db_engine)
        assert seen(redis, db_engine, amqp_channel) == {"greeting": None, "rows": [],
                                                        "messages": 0}
        signal("emptied-b")
'''


@pytest.mark.slow
def test_under_labkit_up_two_processes_are_tenants_that_never_touch_each_other(up, tmp_path):
    (tmp_path / "test_two.py").write_text(TWO_TENANTS)
    signals = tmp_path / "signals"
    signals.mkdir()
    runs = {
        role: subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_two.py"],
            cwd=tmp_path, env=_env(up, LABKIT_BACKEND="auto", ROLE=role, SIGNALS=str(signals)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for role in ("a", "b")
    }
    outputs = {role: run.communicate(timeout=TIMEOUT)[0] for role, run in runs.items()}
    for role, run in runs.items():
        assert run.returncode == 0, f"{role}:\n{outputs[role][-4000:]}"
    tenants = {role: json.loads((signals / f"tenant-{role}.json").read_text())
               for role in runs}
    for tenant in tenants.values():
        # PostgreSQL and RabbitMQ: tenants of the shared servers; Redis: a private server
        assert tenant["backends"] == ["tenant", "local", "tenant"]
        for name in tenant["names"]:
            services.validate_tenant_name(name)
    assert not set(tenants["a"]["names"]) & set(tenants["b"]["names"])
    assert tenants["a"]["redis"] != tenants["b"]["redis"]
    up_redis = urlsplit(json.loads((up / "up.json").read_text())["urls"]["redis"]).port
    assert up_redis not in {tenants["a"]["redis"], tenants["b"]["redis"]}
    # each process dropped its tenants when it exited
    left = services.list_tenants(_admin(up))
    assert not {name for tenant in tenants.values() for name in tenant["names"]} & set(left)


@pytest.mark.slow
def test_status_and_env_say_how_processes_share_labkit_up(up):
    status = _labkit(up, "status")
    assert status.returncode == 0, status.stderr
    assert "postgres: shared; each process a tenant" in status.stdout
    assert "rabbitmq: shared; each process a tenant" in status.stdout
    assert "redis: each process starts its own private server" in status.stdout
    env = _labkit(up, "env", "postgres")
    assert env.returncode == 0, env.stderr
    assert "export DATABASE_URL=postgresql://" in env.stdout
    admin = json.loads((up / "up.json").read_text())["admin"]
    assert set(admin) == {"postgres", "rabbitmq"}
    assert (up / "up.json").stat().st_mode & 0o077 == 0


OWNER = '''
import json
from labkit import services

postgres, rabbitmq, redis = (services.get(name) for name in ("postgres", "rabbitmq", "redis"))
print(json.dumps({"names": [postgres.database, rabbitmq.extra["vhost"]],
                  "backends": [postgres.backend, rabbitmq.backend, redis.backend],
                  "redis": redis.port}), flush=True)
input()  # hold the tenants until killed
'''


@pytest.mark.slow
def test_a_killed_owners_tenant_is_swept_by_labkit_up(up):
    owner = subprocess.Popen([sys.executable, "-c", OWNER], env=_env(up, LABKIT_BACKEND="auto"),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        made = json.loads(owner.stdout.readline())
        assert made["backends"] == ["tenant", "tenant", "local"]
        names = set(made["names"])
        assert names <= set(services.list_tenants(_admin(up)))
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=TIMEOUT)
        deadline = time.monotonic() + SWEPT_WITHIN
        while names & set(services.list_tenants(_admin(up))) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not names & set(services.list_tenants(_admin(up))), "not swept"
        # its private Redis went with it (its reaper), nothing listens there any more
        while time.monotonic() < deadline and any(
                c.laddr and c.laddr.port == made["redis"] and c.status == psutil.CONN_LISTEN
                for c in psutil.net_connections("tcp")):
            time.sleep(0.5)
        assert not any(c.laddr and c.laddr.port == made["redis"] and
                       c.status == psutil.CONN_LISTEN for c in psutil.net_connections("tcp"))
    finally:
        if owner.poll() is None:
            owner.kill()
