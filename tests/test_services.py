"""labkit.services on whichever backend LABKIT_BACKEND selects (CI runs this file on each)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pika
import psutil
import psycopg
import pytest
import redis as redis_lib
from processes import alive, process_status
from sqlalchemy import text

from labkit import services
from labkit.services import local_records, redact, sweep_local
from labkit.waiting import wait_until

BACKEND = os.environ.get("LABKIT_BACKEND", "auto")
# Backends whose server this process does not own: someone else's, or a shared one
# (`labkit up`, admin URLs) it is a tenant of. Nothing to pause, nothing it can leak.
NOT_OURS = {"external", "tenant"}


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


LOOPBACKS = {"127.0.0.1", "::1"}


def listening_sockets(procs: list[psutil.Process]) -> set[tuple[str, str, int]]:
    """(process name, address, port) of each TCP listener or bound UDP socket of procs."""
    found = set()
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.laddr and not conn.raddr
                                                         and conn.type == socket.SOCK_DGRAM):
                    found.add((proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.parametrize("service", ["postgres", "redis", "rabbitmq", "aws"])
def test_local_servers_listen_on_loopback_only(service):
    """Every socket a local server's processes listen on is on loopback, not only its URL's.

    RabbitMQ also listens for Erlang nodes (the distribution port) and runs an epmd;
    both bind every interface by default, guarded only by the cookie.
    """
    if services.backend_for(service)[0] != "local":
        pytest.skip("this checks the servers the local backend starts")
    endpoint = services.get(service)
    procs = services.processes_of(services.handle(service).record)
    listening = listening_sockets(procs)
    assert ("127.0.0.1", endpoint.port) in {(ip, port) for _, ip, port in listening}, listening
    exposed = sorted(s for s in listening if s[1] not in LOOPBACKS)
    assert not exposed, f"{service} listens beyond loopback: {exposed} (all: {sorted(listening)})"
    if service == "rabbitmq":
        assert {"beam.smp", "epmd"} <= {name for name, _, _ in listening}, listening


@pytest.mark.docker
@pytest.mark.parametrize("service", ["postgres", "redis", "rabbitmq"])
def test_containers_publish_on_loopback_only(service):
    """Each port a labkit container publishes is bound to loopback on the host.

    It reads what the engine bound, not what labkit asked for: where a request leaves
    the address empty, the engine's default ("ip" in daemon.json) decides.
    """
    if services.backend_for(service)[0] != "docker":
        pytest.skip("this checks the containers the docker backend starts")
    container = services.handle(service).wrapped
    container.reload()
    published = [(binding["HostIp"], binding["HostPort"], port)
                 for port, bindings in container.attrs["NetworkSettings"]["Ports"].items()
                 for binding in bindings or ()]
    assert published, f"{service}'s container publishes no port"
    exposed = [b for b in published if b[0] not in LOOPBACKS]
    assert not exposed, f"{service}'s container publishes beyond loopback: {exposed}"


def test_printed_urls_hide_passwords(postgres):
    if postgres.password:
        assert postgres.password not in postgres.safe_url
        assert postgres.password not in str(postgres)


def test_paused_postgres_times_out_then_recovers(postgres):
    if postgres.backend in NOT_OURS:
        pytest.skip("labkit pauses no server it does not run, nor a shared one")
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
            services.get("memcached")


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
    """SIGKILL a process and its reaper (the OOM killer, `kill -9 -1`) and check the next
    start sweeps its server. tests/test_leaks.py covers the reaper itself."""
    if services.backend_for(service)[0] in NOT_OURS:
        pytest.skip("no server is started for this process (tenants: test_shared.py)")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, service],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    port = int(child.stdout.readline())
    _kill_reaper_of(child.pid)
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


TERMINATED_CHILD = """
import sys
from labkit import services
ports = [services.get(name).port for name in sys.argv[1:]]
print(*ports, flush=True)
sys.stdin.read()  # busy as a kernel in a cell: SIGTERM comes while it waits
"""


@pytest.mark.slow
def test_a_terminated_owner_stops_its_services():
    """SIGTERM (`timeout`, a cancelled CI job, Jupyter shutting a busy kernel down) stops
    the owner's servers as a normal exit does, without a sweep or `labkit down`."""
    names = ["postgres", "redis"]
    if any(services.check(name)[0] != "local" for name in names):
        pytest.skip("this test is about local servers (LABKIT_BACKEND=local)")
    child = subprocess.Popen(
        [sys.executable, "-c", TERMINATED_CHILD, *names],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "LABKIT_BACKEND": "local"},
    )
    try:
        ports = [int(port) for port in child.stdout.readline().split()]
        assert len(ports) == len(names), "the child did not start its services"
        records = [r for r in local_records() if r.owner_pid == child.pid]
        assert sorted(r.service for r in records) == sorted(names)
        servers = {r.service: _tree(r.group) for r in records}  # each with its children
        assert all(servers.values()), "each server should be running"

        child.send_signal(signal.SIGTERM)
        status = child.wait(timeout=60)  # stopping 2 servers, on a loaded machine

        assert status == -signal.SIGTERM, "the owner should still die of SIGTERM (status 143)"
        left = {name: [p.pid for p in procs if alive(p)] for name, procs in servers.items()}
        assert not any(left.values()), f"processes left behind: {left}"
        assert not [r.workdir for r in records if os.path.exists(r.workdir)], "temp dirs left"
        assert not [r for r in local_records() if r.owner_pid == child.pid], "records left"
        assert not [port for port in ports if _port_open(port)], "a server still answers"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sweep_local()  # without the fix, what the child left would outlive the test


APP_HANDLER_CHILD = """
import signal, sys
from labkit import services
signal.signal(signal.SIGTERM, lambda *_: sys.exit("the application's own SIGTERM handler"))
print(services.get("redis").port, flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_an_applications_sigterm_handler_is_left_alone():
    """labkit takes SIGTERM only where nobody set a handler: the application's runs, and
    its normal exit stops the services (atexit)."""
    if services.check("redis")[0] != "local":
        pytest.skip("this test is about local servers (LABKIT_BACKEND=local)")
    child = subprocess.Popen(
        [sys.executable, "-c", APP_HANDLER_CHILD],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "LABKIT_BACKEND": "local"},
    )
    try:
        port = int(child.stdout.readline())
        [record] = [r for r in local_records() if r.owner_pid == child.pid]
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)

        assert (child.returncode, err.strip()) == (1, "the application's own SIGTERM handler")
        assert not os.path.exists(record.workdir) and not _port_open(port), "redis left"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sweep_local()

PAUSED_CHILD = """
import sys
from labkit import services
with services.paused("postgres") as endpoint:
    print(endpoint.port, flush=True)
    sys.stdin.read()  # the outage demo, when the kernel is killed
"""


@pytest.mark.slow
def test_an_owner_killed_during_an_outage_leaks_nothing():
    """Lesson 03b pauses PostgreSQL (SIGSTOP): if the kernel dies then, the sweep must
    wake every process of the server to kill it, the postmaster's children included."""
    if services.check("postgres")[0] != "local":
        pytest.skip("this test is about local servers (LABKIT_BACKEND=local)")
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CHILD],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "LABKIT_BACKEND": "local"},
    )
    try:
        assert child.stdout.readline().strip().isdigit(), "the child did not start postgres"
        [record] = [r for r in local_records() if r.owner_pid == child.pid]
        server = _tree(record.group)
        assert len(server) > 1, "the postmaster should have children (checkpointer, …)"
        assert _wait_stopped(server), "the server's processes should be paused (SIGSTOP)"
        _kill_reaper_of(child.pid)  # the sweep is on test here, not the reaper
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

        sweep_local()

        left = [f"{p.pid} {process_status(p)}" for p in server if alive(p)]
        assert not left, f"PostgreSQL processes left after the sweep: {left}"
        assert not os.path.exists(record.workdir), "data dir left after the sweep"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sweep_local()


def _kill_reaper_of(pid: int) -> None:
    """Kill the reaper watching `pid`: what `pid` leaves is then for the sweep alone."""
    reaper = wait_until(lambda: services.reaper_of(pid), timeout=60,
                        message=f"a reaper watching {pid}")
    reaper.kill()
    wait_until(lambda: not alive(reaper), timeout=10, message=f"reaper {reaper.pid} dead")


def _tree(pid: int) -> list[psutil.Process]:
    server = psutil.Process(pid)
    return [server, *server.children(recursive=True)]


def _wait_stopped(procs: list[psutil.Process], seconds: float = 10) -> bool:
    """Every live one stopped: a signal to another process lands a moment later."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(process_status(p) in (psutil.STATUS_STOPPED, None) for p in procs):
            return True
        time.sleep(0.1)
    return False



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
    if postgres.backend in NOT_OURS:
        pytest.skip("labkit pauses no server it does not run, nor a shared one")
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
def test_auto_falls_back_to_local_when_the_image_cannot_be_had(tmp_path):
    """Offline venue: an engine answers but the image can't be pulled; binaries exist."""
    from labkit.services import engine_answers

    if not engine_answers():
        pytest.skip("needs a Docker engine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_REDIS")}
    # a state dir of its own: no `labkit up` of this project (CI's) chooses for it
    env.update(LABKIT_BACKEND="auto", LABKIT_REDIS_IMAGE="labkit/no-such-image:0",
               LABKIT_STATE_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", "from labkit import services; print(services.get('redis').backend)"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.stdout.strip().endswith("local"), result.stdout + result.stderr
    assert "using local binaries for redis instead" in result.stdout


class TestEndpointsForOtherProjects:
    """What a project that is not labkit reads: parts, a libpq DSN, env variables."""

    def test_postgres_parts_dsn_conninfo_and_sqlalchemy_url(self):
        pg = services.specs()["postgres"].from_url("postgresql://app:s3cret@db.example:6543/shop")
        assert (pg.host, pg.port, pg.user, pg.password, pg.database) == (
            "db.example", 6543, "app", "s3cret", "shop")
        assert pg.dsn == "postgresql://app:s3cret@db.example:6543/shop"
        assert pg.sqlalchemy_url == "postgresql+psycopg://app:s3cret@db.example:6543/shop"
        assert pg.conninfo == "host=db.example port=6543 user=app password=s3cret dbname=shop"

    def test_conninfo_quotes_what_libpq_would_split(self):
        pg = services.specs()["postgres"].from_url("postgresql://app:it%27s%20me@h/db")
        assert pg.password == "it's me"
        assert "password='it\\'s me'" in pg.conninfo

    def test_other_services_have_plain_urls_and_no_sqlalchemy_url(self):
        redis = services.specs()["redis"].from_url("redis://:pw@127.0.0.1:6380/15")
        assert (redis.dsn, redis.database, redis.password) == ("redis://:pw@127.0.0.1:6380/15",
                                                               "15", "pw")
        with pytest.raises(services.ServiceError, match="no SQLAlchemy URL"):
            _ = redis.sqlalchemy_url
        with pytest.raises(services.ServiceError, match="not PostgreSQL"):
            _ = redis.conninfo

    def test_environment_names_what_each_tool_reads(self):
        spec = services.specs()["postgres"]
        pg = spec.from_url("postgresql://app:pw@db.example:6543/shop")
        variables = spec.environ(pg)
        assert variables["DATABASE_URL"] == pg.dsn
        assert {k: variables[k] for k in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")} \
            == {"PGHOST": "db.example", "PGPORT": "6543", "PGUSER": "app", "PGPASSWORD": "pw",
                "PGDATABASE": "shop"}
        # labkit reads its own variable back as the same server
        assert spec.from_url(variables["LABKIT_POSTGRES_URL"]).url == pg.url
        aws = services.specs()["aws"]
        assert aws.environ(aws.from_url("http://127.0.0.1:4566"))["AWS_ENDPOINT_URL"] \
            == "http://127.0.0.1:4566"

    def test_a_foreign_client_connects_with_the_dsn_and_conninfo(self, postgres):
        for dsn in (postgres.dsn, postgres.conninfo):
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                assert conn.execute("select 1").fetchone() == (1,)

    def test_export_sets_the_variables_an_app_reads_at_import(self, monkeypatch, redis):
        for name in services.environ("redis"):
            monkeypatch.setenv(name, "restored after the test")
        exported = services.export("redis")
        assert os.environ["REDIS_URL"] == exported["REDIS_URL"] == redis.dsn
        assert redis_lib.Redis.from_url(os.environ["REDIS_URL"]).ping()


class TestStateIsPerProject:
    """`labkit up` state lives in the project, readable by its owner only."""

    @pytest.fixture
    def two_projects(self, tmp_path, monkeypatch):
        monkeypatch.delenv("LABKIT_STATE_DIR", raising=False)
        for name in ("a", "b"):
            (tmp_path / name / "notebooks").mkdir(parents=True)
            (tmp_path / name / "pyproject.toml").write_text("")
        return tmp_path / "a", tmp_path / "b"

    def test_state_lives_in_the_nearest_project_and_ignores_itself(self, two_projects,
                                                                   monkeypatch):
        a, _ = two_projects
        monkeypatch.chdir(a / "notebooks")
        assert services.project_root() == a.resolve()
        assert services.state_dir() == a.resolve() / ".labkit"
        assert (a / ".labkit" / ".gitignore").read_text().splitlines()[-1] == "*"

    def test_an_explicit_state_dir_wins(self, two_projects, monkeypatch, tmp_path):
        monkeypatch.chdir(two_projects[0])
        monkeypatch.setenv("LABKIT_STATE_DIR", str(tmp_path / "explicit"))
        assert services.state_dir() == tmp_path / "explicit"

    def test_one_projects_session_does_not_redirect_another(self, two_projects, monkeypatch):
        a, b = two_projects
        monkeypatch.chdir(a)
        me = psutil.Process()
        services.write_up_state(me.pid, me.create_time(), {"redis": "redis://127.0.0.1:1/0"})
        assert services.read_up_state() is not None
        monkeypatch.setenv("LABKIT_BACKEND", "auto")
        monkeypatch.delenv("LABKIT_REDIS_URL", raising=False)
        assert services.backend_for("redis") == ("external", "labkit up")
        monkeypatch.chdir(b)
        assert services.read_up_state() is None
        assert services.given("redis") is None

    def test_state_is_readable_by_its_owner_only(self, two_projects, monkeypatch):
        monkeypatch.chdir(two_projects[0])
        me = psutil.Process()
        services.write_up_state(me.pid, me.create_time(), {})
        record = services.LocalRecord("redis", "test", me.pid, me.create_time(), "/nowhere", "")
        record.save()
        try:
            state = services.state_dir()
            for path in (state, state / "instances"):
                assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
            for path in (services.up_file(), record.path):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        finally:
            record.forget()

    def test_a_dead_daemons_state_is_swept(self, two_projects, monkeypatch):
        monkeypatch.chdir(two_projects[0])
        services.write_up_state(_dead_pid(), 0.0, {"redis": "redis://127.0.0.1:1/0"})
        assert services.read_up_state() is None
        assert not services.up_file().exists()


def _dead_pid() -> int:
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
    return int(exited.stdout)


def test_every_service_module_is_in_the_registry_and_nothing_registers_itself():
    """Adding a service is its module plus one registry line; no import side effects."""
    import ast
    from pathlib import Path

    package = Path(services.__file__).parent
    modules = {path.stem for path in package.glob("_*.py")
               if any(isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SPEC"
                      for node in ast.parse(path.read_text()).body)}
    assert {f"_{name}" for name in services.specs()} == modules
    registry = (package / "_registry.py").read_text()
    for name in services.specs():
        assert f"_{name}.SPEC," in registry
    assert "def register" not in (package / "__init__.py").read_text()


# The README's recipe ("Use labkit from another project"), as a project that is not labkit.
FOREIGN_CONFTEST = '''
from labkit import services


def pytest_configure(config):
    services.export("postgres", "redis")  # DATABASE_URL, REDIS_URL, PG*, LABKIT_*_URL
'''
FOREIGN_SETTINGS = '''
import redis
from pydantic_settings import BaseSettings
from sqlalchemy import create_engine


class Settings(BaseSettings):
    database_url: str  # from DATABASE_URL
    redis_url: str  # from REDIS_URL


settings = Settings()  # read once, when the app is imported, as in production
engine = create_engine(settings.database_url.replace("postgresql://", "postgresql+psycopg://", 1))
cache = redis.Redis.from_url(settings.redis_url)
'''
FOREIGN_TEST = '''
from sqlalchemy import text

from settings import cache, engine


def test_the_app_got_labkits_services():
    with engine.connect() as connection:
        assert connection.execute(text("select 1")).scalar() == 1
    assert cache.ping()
'''


@pytest.mark.slow
def test_a_foreign_project_gets_endpoints_before_its_app_is_imported(tmp_path, postgres, redis):
    """The README's recipe, run in a project that is not labkit: settings read at import."""
    for name, source in (("conftest.py", FOREIGN_CONFTEST), ("settings.py", FOREIGN_SETTINGS),
                         ("test_app.py", FOREIGN_TEST), ("pyproject.toml", "")):
        (tmp_path / name).write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    for endpoint in (postgres, redis):
        spec = services.specs()[endpoint.service]
        env.update({spec.backend_env: "external", spec.url_env: endpoint.url})
    env["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


PARALLEL_STARTS = """
import threading
from labkit import services

rabbitmq = threading.Thread(target=services.get, args=("rabbitmq",))
rabbitmq.start()
services.get("redis")
print("rabbitmq still starting" if rabbitmq.is_alive() else "rabbitmq was already up")
rabbitmq.join()
print(sorted(services.running()))
"""


@pytest.mark.slow
def test_a_service_is_usable_while_another_one_still_starts(tmp_path):
    """setup(start=…) starts a lesson's services in the background: one does not wait for another.

    RabbitMQ boots in seconds, Redis in a fraction of one; with one lock for all starts
    Redis would be handed out only after RabbitMQ was up.
    """
    if NOT_OURS & {services.backend_for(s)[0] for s in ("redis", "rabbitmq")}:
        pytest.skip("no server starts for this process on the external or tenant backend")
    child = subprocess.run(
        [sys.executable, "-c", PARALLEL_STARTS],
        capture_output=True, text=True, timeout=180, check=True,
        env={**os.environ, "LABKIT_STATE_DIR": str(tmp_path)},
    )
    assert child.stdout.splitlines() == ["rabbitmq still starting", "['rabbitmq', 'redis']"]
