"""Tenants on shared servers: isolated from each other, dropped whole, swept when dead.

The shared servers are the ones this run already uses (`services.get`: the machine's,
labkit's private ones, or a CI container's) plus a RabbitMQ labkit starts with its
management API, which tenants need for vhosts. LABKIT_*_ADMIN_URL, when set, names
other servers instead.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pika
import psutil
import psycopg
import pytest
import redis as redis_lib
from servers import local_servers

from labkit import services
from labkit.services import ADMIN_ENV, Tenant, TenantAdmin, TenantError

pytest_plugins = ["pytester"]

TIMEOUT = 120  # a subprocess's bound on a loaded machine, never a speed target
POSTGRES_OWN_WAIT = 5.0  # how long CREATE DATABASE waits for its template's sessions


@pytest.fixture(scope="module")
def managed_rabbitmq() -> Iterator[services.Handle]:
    """A RabbitMQ labkit owns, with the HTTP management API (the machine's has none)."""
    with local_servers("rabbitmq") as started:
        yield started["rabbitmq"]


@pytest.fixture(scope="module")
def management_url(managed_rabbitmq: services.Handle) -> str:
    return managed_rabbitmq.endpoint.extra["management_url"]


def test_the_management_api_listens_on_loopback_only(managed_rabbitmq, management_url):
    listening = set()
    for proc in services.processes_of(managed_rabbitmq.record):  # type: ignore[attr-defined]
        with contextlib.suppress(psutil.NoSuchProcess):
            listening |= {(conn.laddr.ip, conn.laddr.port)
                          for conn in proc.net_connections(kind="inet")
                          if conn.status == psutil.CONN_LISTEN}
    port = urllib.parse.urlsplit(management_url).port
    assert ("127.0.0.1", port) in listening, listening
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1"}, listening


@pytest.fixture(scope="module")
def owned_servers() -> Iterator[dict[str, services.Endpoint]]:
    """A PostgreSQL and a Redis this module runs. Not the `postgres` and `redis`
    fixtures: under `labkit up` (as in CI) those are themselves tenants, whose role may
    not create databases and whose Redis user may not manage ACLs."""
    with local_servers("postgres", "redis") as started:
        yield {name: handle.endpoint for name, handle in started.items()}


@pytest.fixture(scope="module")
def admin(management_url: str, owned_servers: dict[str, services.Endpoint]) -> TenantAdmin:
    """Admin URLs: from LABKIT_*_ADMIN_URL, else the owned servers' users (superuser,
    Redis default user) and the management API above."""
    return TenantAdmin(
        postgres=os.environ.get(ADMIN_ENV["postgres"]) or owned_servers["postgres"].dsn,
        redis=os.environ.get(ADMIN_ENV["redis"]) or owned_servers["redis"].url,
        rabbitmq=os.environ.get(ADMIN_ENV["rabbitmq"]) or management_url,
    )


def _api(management_url: str, method: str, path: str, body: object | None = None) -> object:
    """The management API as its admin, for looking behind the tenants' backs."""
    parts = urllib.parse.urlsplit(management_url)
    request = urllib.request.Request(
        f"http://{parts.hostname}:{parts.port}/api/{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
    )
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return json.loads(text) if text else {}


def _pg(endpoint: services.Endpoint, database: str | None = None) -> psycopg.Connection:
    return psycopg.connect(host=endpoint.host, port=endpoint.port, user=endpoint.username,
                           password=endpoint.password, dbname=database or endpoint.database,
                           connect_timeout=10, autocommit=True)


def _admin_pg(admin: TenantAdmin, database: str | None = None) -> psycopg.Connection:
    assert admin.postgres
    endpoint = services.specs()["postgres"].from_url(admin.postgres)
    return _pg(endpoint, database)


def _admin_redis(admin: TenantAdmin) -> redis_lib.Redis:
    assert admin.redis
    return redis_lib.Redis.from_url(admin.redis, decode_responses=True)


def _amqp(endpoint: services.Endpoint, vhost: str | None = None) -> pika.BlockingConnection:
    params = pika.URLParameters(endpoint.url)
    if vhost is not None:
        params.virtual_host = vhost
    params.connection_attempts = 1
    params.socket_timeout = 10
    return pika.BlockingConnection(params)


def _exists(admin: TenantAdmin, management_url: str, name: str) -> dict[str, bool]:
    """Which of the tenant's objects still exist, seen with admin rights."""
    with _admin_pg(admin) as conn:
        database = conn.execute("select 1 from pg_database where datname = %s",
                                (name,)).fetchone()
        role = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
    client = _admin_redis(admin)
    try:
        acl_user = client.acl_getuser(name) is not None
        keys = any(True for _ in client.scan_iter(match=f"{name}:*"))
        registered = client.hexists("labkit:tenants", name)
    finally:
        client.close()
    return {
        "database": database is not None,
        "role": role is not None,
        "acl user": acl_user,
        "keys": keys,
        "registry": bool(registered),
        "vhost": _api(management_url, "GET", f"vhosts/{name}") is not None,
        "rabbitmq user": _api(management_url, "GET", f"users/{name}") is not None,
    }


def _all_made(exists: dict[str, bool]) -> bool:
    """Every object a tenant is made of exists (its keys are up to the tenant)."""
    return all(found for what, found in exists.items() if what != "keys")


def _workload(tenant: Tenant, other: Tenant, barrier: threading.Barrier,
              refusals: dict[str, list[str]]) -> None:
    """Write in every service, then try to flush, purge and reach into `other`."""
    seen = refusals.setdefault(tenant.name, [])
    prefix = tenant["redis"].extra["key_prefix"]
    with _pg(tenant["postgres"]) as conn:
        conn.execute("create table notes (owner text)")
        for _ in range(50):
            conn.execute("insert into notes values (%s)", (tenant.name,))
    client = redis_lib.Redis.from_url(tenant["redis"].url, decode_responses=True)
    for i in range(50):
        client.set(f"{prefix}k{i}", tenant.name)
    connection = _amqp(tenant["rabbitmq"])
    channel = connection.channel()
    channel.queue_declare("jobs", durable=True)  # the same queue name in both tenants
    for _ in range(5):
        channel.basic_publish("", "jobs", b"to be purged")
    barrier.wait(timeout=60)  # both have written: now each tries to reach the other

    channel.queue_purge("jobs")  # purges this tenant's queue only
    for _ in range(3):
        channel.basic_publish("", "jobs", tenant.name.encode())
    connection.close()
    other_prefix = other["redis"].extra["key_prefix"]
    attempts = {
        "flushdb": client.flushdb,
        "flushall": client.flushall,
        "keys *": lambda: client.keys("*"),
        "keys other": lambda: client.keys(f"{other_prefix}*"),
        "scan": lambda: client.scan(0),
        "randomkey": client.randomkey,
        "get other": lambda: client.get(f"{other_prefix}k0"),
        "delete other": lambda: client.delete(f"{other_prefix}k0"),
        "unprefixed set": lambda: client.set("k0", "x"),
    }
    for what, attempt in attempts.items():
        # NoPermissionError is how redis-py raises a NOPERM reply
        with pytest.raises(redis_lib.exceptions.NoPermissionError, match="no permissions"):
            attempt()
        seen.append(f"redis {what}")
    client.close()
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        _pg(tenant["postgres"], database=other.name)
    seen.append("postgres connect other")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        _amqp(tenant["rabbitmq"], vhost=other.name)
    seen.append("amqp open other vhost")
    barrier.wait(timeout=60)


def test_two_tenants_concurrently_neither_sees_nor_deletes_the_other(admin, management_url):
    tenants: list[Tenant] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            tenants.append(services.create_tenant(admin))
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    makers = [threading.Thread(target=create) for _ in range(2)]
    for thread in makers:
        thread.start()
    for thread in makers:
        thread.join(TIMEOUT)
    try:
        assert not errors, errors
        first, second = tenants
        assert first.name != second.name
        assert first["postgres"].password != second["postgres"].password
        barrier = threading.Barrier(2)
        refusals: dict[str, list[str]] = {}

        def run(tenant: Tenant, other: Tenant) -> None:
            try:
                _workload(tenant, other, barrier, refusals)
            except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
                barrier.abort()
                errors.append(exc)

        workers = [threading.Thread(target=run, args=pair)
                   for pair in ((first, second), (second, first))]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(TIMEOUT)
        assert not errors, errors
        assert len(refusals[first.name]) == len(refusals[second.name]) == 11

        for tenant in (first, second):
            with _pg(tenant["postgres"]) as conn:
                owners = conn.execute("select owner, count(*) from notes group by owner")
                assert owners.fetchall() == [(tenant.name, 50)]
            client = redis_lib.Redis.from_url(tenant["redis"].url, decode_responses=True)
            prefix = tenant["redis"].extra["key_prefix"]
            values = client.mget([f"{prefix}k{i}" for i in range(50)])
            client.close()
            assert values == [tenant.name] * 50
            connection = _amqp(tenant["rabbitmq"])
            channel = connection.channel()
            bodies = []
            for _ in range(4):
                _, _, body = channel.basic_get("jobs", auto_ack=True)
                bodies.append(body)
            connection.close()
            assert bodies == [tenant.name.encode()] * 3 + [None]
    finally:
        for tenant in tenants:
            tenant.drop()


def test_drop_removes_all_the_tenant_owned(admin, management_url):
    with services.create_tenant(admin) as tenant:
        client = redis_lib.Redis.from_url(tenant["redis"].url)
        client.set(tenant["redis"].extra["key_prefix"] + "left", "behind?")
        client.close()
        assert all(_exists(admin, management_url, tenant.name).values())
    assert not any(_exists(admin, management_url, tenant.name).values()), \
        _exists(admin, management_url, tenant.name)
    with pytest.raises(psycopg.OperationalError):
        _pg(tenant["postgres"], database="postgres")
    tenant.drop()  # a second drop does nothing


CHILD_MAKES_A_TENANT = """
import time
from labkit import services
tenant = services.create_tenant()
print(tenant.name, flush=True)
time.sleep(600)
"""


def test_a_dead_owners_tenant_is_swept_and_a_live_ones_survives(admin, management_url):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_MAKES_A_TENANT],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, ADMIN_ENV["postgres"]: admin.postgres or "",
             ADMIN_ENV["redis"]: admin.redis or "", ADMIN_ENV["rabbitmq"]: admin.rabbitmq or ""},
    )
    try:
        assert child.stdout is not None
        dead_name = child.stdout.readline().strip()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(TIMEOUT)
    assert services.validate_tenant_name(dead_name)
    assert _all_made(_exists(admin, management_url, dead_name))
    with services.create_tenant(admin) as live:
        swept = services.sweep_tenants(admin)
        assert dead_name in swept
        assert live.name not in swept
        assert not any(_exists(admin, management_url, dead_name).values())
        assert _all_made(_exists(admin, management_url, live.name))
        with _pg(live["postgres"]) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert redis_lib.Redis.from_url(live["redis"].url).ping()
        _amqp(live["rabbitmq"]).close()


def test_a_tenant_left_undropped_goes_when_its_process_exits(admin, management_url):
    child = subprocess.run(
        [sys.executable, "-c", "from labkit import services; print(services.create_tenant().name)"],
        capture_output=True, text=True, timeout=TIMEOUT, check=True,
        env={**os.environ, ADMIN_ENV["postgres"]: admin.postgres or "",
             ADMIN_ENV["redis"]: admin.redis or "", ADMIN_ENV["rabbitmq"]: admin.rabbitmq or ""},
    )
    name = services.validate_tenant_name(child.stdout.strip())
    assert not any(_exists(admin, management_url, name).values())


def test_a_taken_name_is_refused_and_its_owner_keeps_everything(admin, management_url):
    with services.create_tenant(admin) as tenant:
        key = tenant["redis"].extra["key_prefix"] + "mine"
        redis_lib.Redis.from_url(tenant["redis"].url).set(key, "still here")
        for service in (None, ("postgres",), ("redis",), ("rabbitmq",)):
            with pytest.raises(TenantError, match="exists already"):
                services.create_tenant(admin, name=tenant.name, services=service)
        # the failed create dropped nothing of the owner's, nor changed its credentials
        assert all(_exists(admin, management_url, tenant.name).values())
        assert redis_lib.Redis.from_url(tenant["redis"].url).get(key) == b"still here"
        with _pg(tenant["postgres"]) as conn:
            assert conn.execute("select current_database()").fetchone() == (tenant.name,)
        _amqp(tenant["rabbitmq"]).close()


def test_a_tenant_of_another_owner_is_not_dropped(admin, management_url):
    with services.create_tenant(admin) as tenant:
        impostor = replace(tenant, owner=replace(tenant.owner, pid=tenant.owner.pid + 1))
        impostor.dropped = False
        with pytest.raises(TenantError, match="refusing to drop"):
            impostor.drop()
        assert _all_made(_exists(admin, management_url, tenant.name))


@pytest.mark.parametrize("name", ["alice", "lkt_", "lkt_ab", "lkt_Alice", "lkt_a-b-c-d",
                                  "lkt_abcd; drop database postgres", "lkt_abcd:*", "../lkt_abcd",
                                  "lkt_" + "a" * 31])
def test_a_bad_tenant_name_is_refused_before_any_server_is_asked(name):
    unreachable = TenantAdmin(postgres="postgresql://nobody@127.0.0.1:1/x")
    with pytest.raises(TenantError, match="a tenant name is 'lkt_' then 4-30 lowercase"):
        services.create_tenant(unreachable, name=name)


def test_no_admin_url_names_the_variables(monkeypatch, tmp_path):
    for variable in ADMIN_ENV.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(services.STATE_ENV, str(tmp_path))  # no `labkit up` to fall back on
    with pytest.raises(TenantError, match="LABKIT_POSTGRES_ADMIN_URL, LABKIT_REDIS_ADMIN_URL"):
        services.check_admin()


def test_unreachable_admin_urls_say_which_server(management_url):
    checks = {
        "postgres": ("postgresql://postgres@127.0.0.1:1/postgres", "cannot connect to PostgreSQL"),
        "redis": ("redis://127.0.0.1:1/0", "cannot connect to Redis"),
        "rabbitmq": ("http://guest:guest@127.0.0.1:1", "management API .* did not answer"),
    }
    for service, (url, message) in checks.items():
        with pytest.raises(TenantError, match=message):
            services.check_admin(TenantAdmin(**{service: url}))
    with pytest.raises(TenantError, match="is the HTTP management API's URL"):
        services.check_admin(TenantAdmin(rabbitmq="amqp://guest:guest@127.0.0.1:5672/"))


def test_an_admin_without_rights_gets_the_right_named(admin, management_url):
    suffix = uuid.uuid4().hex[:8]
    user, password = f"t10_norights_{suffix}", uuid.uuid4().hex
    with _admin_pg(admin) as conn:
        conn.execute(f"create role {user} login password '{password}'")
    client = _admin_redis(admin)
    client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@read",
                           "+acl|whoami", "+acl|dryrun")
    _api(management_url, "PUT", f"users/{user}", {"password": password, "tags": ""})
    try:
        pg_url = admin.postgres or ""
        parts = urllib.parse.urlsplit(pg_url)
        weak_pg = parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}")
        with pytest.raises(TenantError, match=f"role '{user}' lacks CREATEDB and CREATEROLE"):
            services.check_admin(TenantAdmin(postgres=urllib.parse.urlunsplit(weak_pg)))
        redis_parts = urllib.parse.urlsplit(admin.redis or "")
        weak_redis = redis_parts._replace(
            netloc=f"{user}:{password}@{redis_parts.hostname}:{redis_parts.port}")
        with pytest.raises(TenantError, match=f"user '{user}' may not run ACL SETUSER"):
            services.check_admin(TenantAdmin(redis=urllib.parse.urlunsplit(weak_redis)))
        rabbit_parts = urllib.parse.urlsplit(management_url)
        weak_rabbit = rabbit_parts._replace(
            netloc=f"{user}:{password}@{rabbit_parts.hostname}:{rabbit_parts.port}")
        with pytest.raises(TenantError, match="vhost management, the administrator tag"):
            services.check_admin(TenantAdmin(rabbitmq=urllib.parse.urlunsplit(weak_rabbit)))
        # a user allowed into the management UI, but not to administer the node
        _api(management_url, "PUT", f"users/{user}", {"password": password, "tags": "management"})
        with pytest.raises(TenantError, match=r"\(tags \['management'\]\): tenants need vhost"):
            services.check_admin(TenantAdmin(rabbitmq=urllib.parse.urlunsplit(weak_rabbit)))
        with pytest.raises(TenantError, match="refused the credentials"):
            services.check_admin(TenantAdmin(
                rabbitmq=urllib.parse.urlunsplit(weak_rabbit).replace(password, "wrong")))
    finally:
        with _admin_pg(admin) as conn:
            conn.execute(f"drop role if exists {user}")
        client.acl_deluser(user)
        client.close()
        _api(management_url, "DELETE", f"users/{user}")


def test_create_waits_while_someone_is_connected_to_the_template(admin):
    services.create_tenant(admin, services=("postgres",)).drop()  # the template exists
    template = "labkit_tenant_template"
    with _admin_pg(admin) as conn:
        conn.execute(f"alter database {template} allow_connections true")
    try:
        squatter = _admin_pg(admin, database=template)
        made: list[Tenant] = []
        maker = threading.Thread(
            target=lambda: made.append(services.create_tenant(admin, services=("postgres",))))
        maker.start()
        # PostgreSQL itself waits 5 s for the template's sessions before it gives up with
        # "source database is being accessed by other users": stay longer than that.
        maker.join(POSTGRES_OWN_WAIT + 1.5)
        assert maker.is_alive(), "the copy should wait while the template has a session"
        squatter.close()
        maker.join(TIMEOUT)
        assert len(made) == 1
        made[0].drop()
    finally:
        with _admin_pg(admin) as conn:
            conn.execute(f"alter database {template} allow_connections false")


def test_redis_client_fixture_deletes_only_the_tenants_keys(pytester, admin, monkeypatch):
    with services.create_tenant(admin, services=("redis",)) as tenant, \
            services.create_tenant(admin, services=("redis",)) as neighbour:
        neighbours_key = neighbour["redis"].extra["key_prefix"] + "kept"
        redis_lib.Redis.from_url(neighbour["redis"].url).set(neighbours_key, "mine")
        monkeypatch.setenv("T10_TENANT", tenant.name)
        pytester.makeconftest(
            """
            import os
            import pytest
            from labkit import services

            @pytest.fixture(scope="session")
            def redis():
                return services.live_tenants()[os.environ["T10_TENANT"]]["redis"]
            """
        )
        pytester.makepyfile(
            """
            def test_writes(redis_client, redis):
                prefix = redis.extra["key_prefix"]
                redis_client.set(prefix + "cached", "x")

            def test_starts_empty(redis_client, redis):
                assert redis_client.get(redis.extra["key_prefix"] + "cached") is None
            """
        )
        pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=2)
        assert redis_lib.Redis.from_url(neighbour["redis"].url).get(neighbours_key) == b"mine"
        assert tenant.clear_redis() == 0


def test_aws_tenant_drop_removes_its_prefix_only():
    boto3 = pytest.importorskip("boto3")
    aws = services.get("aws")
    admin = TenantAdmin(aws=aws.url)

    def client(service: str):  # boto3's clients have no public type
        return boto3.client(service, endpoint_url=aws.url, region_name=aws.extra["region"],
                            aws_access_key_id=aws.extra["access_key"],
                            aws_secret_access_key=aws.extra["secret_key"])

    s3, sqs = client("s3"), client("sqs")
    with services.create_tenant(admin) as neighbour:
        kept = neighbour["aws"].extra["prefix"] + "kept"
        s3.create_bucket(Bucket=kept)
        with services.create_tenant(admin) as tenant:
            prefix = tenant["aws"].extra["prefix"]
            assert prefix != neighbour["aws"].extra["prefix"]
            s3.create_bucket(Bucket=prefix + "uploads")
            s3.put_object(Bucket=prefix + "uploads", Key="a.txt", Body=b"x")
            sqs.create_queue(QueueName=prefix + "jobs")
            assert services.sweep_tenants(admin) == []  # both owners live
        buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert not {name for name in buckets if name.startswith(prefix)}
        assert not sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls")
        assert kept in buckets
    assert kept not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


XDIST_TESTS = '''
import json
import os

import pytest
from sqlalchemy import text


@pytest.mark.parametrize("round", range(4))
def test_writes_everywhere(round, db_session, redis_client, redis, amqp_queue, amqp_channel,
                           postgres, rabbitmq):
    db_session.execute(text("create table notes (body text)"))
    db_session.execute(text("insert into notes values ('mine')"))
    redis_client.set(redis.extra["key_prefix"] + "greeting", "hello")
    queue = amqp_queue("jobs")  # one fixed name in both workers: each in its own vhost
    amqp_channel.confirm_delivery()  # publish returns once the broker has the message
    amqp_channel.basic_publish("", queue, b"x")
    assert amqp_channel.queue_declare(queue, passive=True).method.message_count == 1
    with open(os.environ["TENANTS_SEEN"], "a") as seen:
        seen.write(json.dumps({
            "worker": os.environ["PYTEST_XDIST_WORKER"],
            "backends": sorted({postgres.backend, redis.backend, rabbitmq.backend}),
            "names": [postgres.database, redis.username, rabbitmq.extra["vhost"]],
        }) + "\\n")
'''


def test_with_admin_urls_each_xdist_worker_is_a_tenant(admin, management_url, tmp_path):
    (tmp_path / "test_workers.py").write_text(XDIST_TESTS)
    seen = tmp_path / "seen.jsonl"
    env = {key: value for key, value in os.environ.items()
           if not (key.startswith("LABKIT_") and key.endswith(("_URL", "_BACKEND")))}
    env.update({"LABKIT_BACKEND": "auto", "TENANTS_SEEN": str(seen),
                ADMIN_ENV["postgres"]: admin.postgres or "",
                ADMIN_ENV["redis"]: admin.redis or "",
                ADMIN_ENV["rabbitmq"]: admin.rabbitmq or ""})
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
         "test_workers.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = [json.loads(line) for line in seen.read_text().splitlines()]
    assert {row["worker"] for row in rows} == {"gw0", "gw1"}
    assert {backend for row in rows for backend in row["backends"]} == {"tenant"}
    names = {row["worker"]: set(row["names"]) for row in rows}
    assert len(names["gw0"] | names["gw1"]) == 6  # three tenants per worker, none shared
    for name in names["gw0"] | names["gw1"]:
        services.validate_tenant_name(name)
        # each worker dropped its tenants when it exited
        assert not any(_exists(admin, management_url, name).values()), name


def test_a_rabbitmq_admin_url_gives_where_amqp_is_published(admin, management_url):
    """A container's AMQP port is published elsewhere on the host than the server says."""
    published = f"{management_url}?amqp_port=1"
    with services.create_tenant(TenantAdmin(rabbitmq=published)) as tenant:
        assert tenant["rabbitmq"].port == 1
        assert ":1/" in tenant["rabbitmq"].url
    with pytest.raises(TenantError, match="amqp_port is a port number"):
        services.check_admin(TenantAdmin(rabbitmq=f"{management_url}?amqp_port=x"))
