"""A classroom on live servers: learners as tenants, isolated, revoked whole, reporting.

The room's servers are a PostgreSQL and a Redis this module starts, plus a RabbitMQ with
its management API (vhosts are made through it): the trainer holds their admin URLs,
each learner only their own tenant's.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pika
import psycopg
import pytest
import redis as redis_lib
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook
from servers import local_servers

from labkit import services
from labkit.classroom import (
    Classroom,
    ClassroomError,
    Learner,
    RosterError,
    join_token,
    read_join_token,
    report,
    tenant_name,
)
from labkit.services import TenantAdmin

TIMEOUT = 120  # a subprocess's or kernel's bound on a loaded machine, never a speed target


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, services.Endpoint]]:
    """The room's servers, run by this module: superuser, Redis default user, RabbitMQ
    administrator with the management API."""
    with local_servers("postgres", "redis", "rabbitmq") as started:
        yield {name: handle.endpoint for name, handle in started.items()}


@pytest.fixture(scope="module")
def admin(servers: dict[str, services.Endpoint]) -> TenantAdmin:
    return TenantAdmin(postgres=servers["postgres"].dsn, redis=servers["redis"].url,
                       rabbitmq=servers["rabbitmq"].extra["management_url"])


@pytest.fixture
def room(admin: TenantAdmin, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Classroom]:
    """A room of its own per test (rooms on the same servers never share a tenant)."""
    name = "t" + request.node.name.replace("test_", "")[:20].replace("_", "-").lower()
    classroom = Classroom(admin, name=name, state_path=tmp_path / "room.json")
    yield classroom
    for learner in classroom.learners():
        classroom.revoke(learner.name)


def _management(admin: TenantAdmin, path: str, body: object | None = None) -> object | None:
    """RabbitMQ's management API as the room's admin: GET, or PUT `body`."""
    assert admin.rabbitmq
    parts = urllib.parse.urlsplit(admin.rabbitmq)
    request = urllib.request.Request(
        f"http://{parts.hostname}:{parts.port}/api/{path}", method="GET" if body is None else "PUT",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            return json.loads(text) if text else {}
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _left_on_servers(admin: TenantAdmin, tenant: str) -> dict[str, bool]:
    """Which of a tenant's objects exist, seen with the admin's rights."""
    assert admin.postgres and admin.redis
    pg = services.specs()["postgres"].from_url(admin.postgres)
    with psycopg.connect(host=pg.host, port=pg.port, user=pg.username, password=pg.password,
                         dbname="postgres", autocommit=True) as conn:
        database = conn.execute("select 1 from pg_database where datname = %s",
                                (tenant,)).fetchone()
        role = conn.execute("select 1 from pg_roles where rolname = %s", (tenant,)).fetchone()
    with redis_lib.Redis.from_url(admin.redis, decode_responses=True) as client:
        acl_user = client.acl_getuser(tenant) is not None
        keys = any(True for _ in client.scan_iter(match=f"{tenant}:*"))
        registered = bool(client.hexists("labkit:tenants", tenant))
    return {"database": database is not None, "role": role is not None,
            "acl user": acl_user, "keys": keys, "registry": registered,
            "vhost": _management(admin, f"vhosts/{tenant}") is not None,
            "rabbitmq user": _management(admin, f"users/{tenant}") is not None}


def _pg(learner: Learner, database: str | None = None) -> psycopg.Connection:
    pg = services.specs()["postgres"].from_url(learner.env["LABKIT_POSTGRES_URL"])
    return psycopg.connect(host=pg.host, port=pg.port, user=pg.username, password=pg.password,
                           dbname=database or pg.database, connect_timeout=10, autocommit=True)


def _amqp(learner: Learner, vhost: str | None = None) -> pika.BlockingConnection:
    params = pika.URLParameters(learner.env["LABKIT_RABBITMQ_URL"])
    if vhost is not None:
        params.virtual_host = vhost
    params.connection_attempts = 1
    params.socket_timeout = 10
    return pika.BlockingConnection(params)


def test_three_learners_each_reach_only_their_own_data(room):
    alice, bob, carol = (room.provision(name) for name in ("alice", "bob", "carol"))
    assert len({alice.tenant, bob.tenant, carol.tenant}) == 3
    for learner in (alice, bob, carol):
        assert not any("ADMIN" in variable for variable in learner.env), learner.env
        assert learner.env["LABKIT_POSTGRES_BACKEND"] == "external"
        with _pg(learner) as conn:
            conn.execute("create table notes (body text)")
            conn.execute("insert into notes values (%s)", (learner.name,))
        with redis_lib.Redis.from_url(learner.env["LABKIT_REDIS_URL"]) as client:
            client.set(f"{learner.tenant}:secret", learner.name)
        _amqp(learner).close()
    # alice's credentials, turned on bob's database, vhost and keys: refused
    with pytest.raises(psycopg.OperationalError, match="permission denied|not permitted"):
        _pg(alice, database=bob.tenant)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        _amqp(alice, vhost=bob.tenant)
    with redis_lib.Redis.from_url(alice.env["LABKIT_REDIS_URL"]) as client:
        with pytest.raises(redis_lib.exceptions.NoPermissionError):
            client.get(f"{bob.tenant}:secret")
        with pytest.raises(redis_lib.exceptions.NoPermissionError):
            client.keys("*")
    statuses = {status.name: status for status in room.status()}
    assert sorted(statuses) == ["alice", "bob", "carol"]
    assert all(status.healthy for status in statuses.values()), statuses


def test_provisioning_again_keeps_each_learners_tenant_and_credentials(room, admin):
    first = room.provision("alice")
    with _pg(first) as conn:
        conn.execute("create table kept (n int)")
    # another trainer command (a new Classroom on the same state), a roster run again
    again = Classroom(admin, name=room.name, state_path=room.state_path)
    second, late = again.provision_many(["alice", "dave"])
    assert second == first
    assert late.name == "dave" and late.tenant == tenant_name(room.name, "dave")
    with _pg(second) as conn:  # the same database, with what alice made in it
        assert conn.execute("select count(*) from kept").fetchone() == (0,)
    assert [learner.name for learner in again.learners()] == ["alice", "dave"]


def test_a_tenant_name_is_derived_from_room_and_learner():
    assert tenant_name("room", "li-na") == tenant_name("room", "li-na")
    assert tenant_name("room", "li-na") != tenant_name("room", "lina")
    assert tenant_name("room", "alice") != tenant_name("other", "alice")
    assert tenant_name("room", "alice").startswith("lkt_alice")


@pytest.mark.parametrize("name", ["Alice", "", "1bob", "a b", "al;ice", "a" * 33, "ålice"])
def test_a_bad_learner_name_is_refused_before_any_server_is_asked(room, name):
    with pytest.raises(RosterError, match="lowercase letters, digits"):
        room.provision(name)
    assert room.learners() == []


def test_a_roster_with_duplicates_and_bad_names_is_refused_by_line(room, tmp_path):
    roster = tmp_path / "roster.txt"
    roster.write_text("# workshop, Tuesday\nalice\n\nbob   # late\nBob Smith\nalice\ncarol\n")
    with pytest.raises(RosterError) as refused:
        room.provision_roster(roster)
    message = str(refused.value)
    assert "line 5: 'Bob Smith' is not a learner name" in message
    assert "line 6: 'alice' is already on line 2" in message
    assert "line 7" not in message and "line 4" not in message
    assert room.learners() == []  # nobody was provisioned
    roster.write_text("# workshop, Tuesday\nalice\nbob   # late\n")
    assert [learner.name for learner in room.provision_roster(roster)] == ["alice", "bob"]


def test_a_server_down_mid_provisioning_leaves_nothing_of_the_learner(admin, tmp_path):
    # RabbitMQ's admin URL names a user who may list vhosts but not make them: the
    # room's PostgreSQL and Redis tenants are made first, then RabbitMQ refuses, and
    # what was made must go again.
    _management(admin, "users/lk_monitor", {"password": "monitor", "tags": "management"})
    assert admin.rabbitmq
    parts = urllib.parse.urlsplit(admin.rabbitmq)
    broken = TenantAdmin(postgres=admin.postgres, redis=admin.redis,
                         rabbitmq=f"http://lk_monitor:monitor@{parts.hostname}:{parts.port}")
    room = Classroom(broken, name="rollback", state_path=tmp_path / "room.json")
    with pytest.raises(ClassroomError) as failed:
        room.provision("erin")
    assert "learner 'erin'" in str(failed.value), failed.value
    assert "rabbitmq failed" in str(failed.value), failed.value
    left = _left_on_servers(admin, tenant_name("rollback", "erin"))
    assert not any(left.values()), left
    assert room.learners() == []
    # the server itself down: refused before anything is made, naming it
    dead = TenantAdmin(postgres=admin.postgres, redis=admin.redis,
                       rabbitmq=f"http://guest:guest@127.0.0.1:{services.free_port()}")
    with pytest.raises(ClassroomError, match=r"nobody was provisioned \(erin\): rabbitmq"):
        Classroom(dead, name="rollback", state_path=tmp_path / "room.json").provision("erin")
    assert not any(_left_on_servers(admin, tenant_name("rollback", "erin")).values())


TRAINER_PROVISIONS = """
import sys
from pathlib import Path
from labkit.classroom import Classroom
from labkit.services import TenantAdmin
admin = TenantAdmin(postgres=sys.argv[1], redis=sys.argv[2], rabbitmq=sys.argv[3])
Classroom(admin, name=sys.argv[4], state_path=Path(sys.argv[5])).provision("alice")
"""


def test_learner_tenants_outlive_the_trainer_and_the_sweep_and_revoke_leaves_nothing(
        room, admin):
    # the trainer's command provisions, then exits: its tenants are not a dead owner's
    subprocess.run([sys.executable, "-c", TRAINER_PROVISIONS, admin.postgres or "",
                    admin.redis or "", admin.rabbitmq or "", room.name, str(room.state_path)],
                   check=True, timeout=TIMEOUT)
    alice = room.learner("alice")
    with redis_lib.Redis.from_url(alice.env["LABKIT_REDIS_URL"]) as client:
        client.set(f"{alice.tenant}:left", "behind?")
    assert alice.tenant not in services.sweep_tenants(admin)
    left = _left_on_servers(admin, alice.tenant)
    assert all(left.values()), left
    owner, _ = services.list_tenants(admin)[alice.tenant]
    assert owner == services.TenantOwner.classroom(room.name) and owner.alive
    # gone behind the room's back (a server reset): status says so, per service
    services.drop_tenant(alice.tenant, owner, admin, ("rabbitmq",))
    (status,) = room.status()
    assert status.services["postgres"] == "ok" and status.services["redis"] == "ok"
    assert status.services["rabbitmq"] != "ok" and not status.healthy
    room.revoke("alice")
    left = _left_on_servers(admin, alice.tenant)
    assert not any(left.values()), left
    assert room.learners() == []
    with pytest.raises(psycopg.OperationalError):
        _pg(alice)
    room.revoke("alice")  # again: nothing to do


def test_progress_counts_attempts_per_learner_and_exercise(room):
    alice = room.provision("alice")
    room.record("alice", "02a", "count_orders", "not attempted")
    room.record("alice", "02a", "count_orders", "wrong", seconds=1.5)
    room.record("alice", "02a", "count_orders", "wrong")
    room.record("alice", "02a", "count_orders", "solved", seconds=0.25)
    room.record("bob", "02a", "count_orders", "wrong")
    rows = {(row.learner, row.exercise): row for row in room.progress()}
    mine = rows[("alice", "count_orders")]
    assert (mine.outcome, mine.attempts, mine.seconds) == ("solved", 3, 0.25)
    assert mine.first_seen <= mine.last_seen
    assert (rows[("bob", "count_orders")].outcome, rows[("bob", "count_orders")].attempts) \
        == ("wrong", 1)
    with pytest.raises(ValueError, match="outcome is one of"):
        room.record("alice", "02a", "count_orders", "passed")
    # a learner cannot reach the progress database with their own credentials
    with pytest.raises(psycopg.OperationalError, match="permission denied|not permitted"):
        _pg(alice, database="labkit_classroom")


class _Board:
    """A real HTTP receiver standing in for the board: keeps what it was sent."""

    def __init__(self) -> None:
        received: list[dict[str, object]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append({"path": self.path, "auth": self.headers["Authorization"],
                                  **body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/board"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def board() -> Iterator[_Board]:
    receiver = _Board()
    yield receiver
    receiver.close()


CHECKS = [
    ("import ipytest\nipytest.autoconfig(raise_on_error=True)\n"
     "from labkit.exercises import register_magics\nregister_magics()"),
    "%%check adding\ndef test_adds():\n    assert 1 + 1 == 2",
    "%%check subtracting\ndef test_subtracts():\n    assert 2 - 1 == 0",
]


def _run_checks(env: dict[str, str], tmp_path: Path) -> list[dict[str, object]]:
    """Run CHECKS in a real kernel with `env`; each cell's outputs."""
    notebook = new_notebook(cells=[new_code_cell(source) for source in CHECKS])
    previous = dict(os.environ)
    os.environ.update(env)
    try:
        NotebookClient(notebook, timeout=TIMEOUT, allow_errors=True,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(previous)
    return [output for cell in notebook.cells for output in cell.outputs]


def test_check_magic_reports_each_outcome_to_the_board(board, tmp_path):
    outputs = _run_checks({"LABKIT_CLASSROOM_URL": board.url,
                           "LABKIT_CLASSROOM_TOKEN": "alices-token",
                           "JPY_SESSION_NAME": str(tmp_path / "02a_orders.ipynb")}, tmp_path)
    sent = [(r["path"], r["auth"], r["lesson"], r["exercise"], r["outcome"])
            for r in board.received]
    assert sent == [
        ("/board/progress", "Bearer alices-token", "02a_orders", "adding", "solved"),
        ("/board/progress", "Bearer alices-token", "02a_orders", "subtracting", "wrong"),
    ], outputs
    assert all(isinstance(r["seconds"], float) and r["seconds"] >= 0 for r in board.received)


def test_a_board_that_is_down_costs_the_learner_one_calm_line(tmp_path):
    down = f"http://127.0.0.1:{services.free_port()}/board"
    outputs = _run_checks({"LABKIT_CLASSROOM_URL": down, "LABKIT_CLASSROOM_TOKEN": "t",
                           "JPY_SESSION_NAME": "02a_orders.ipynb"}, tmp_path)
    text = "".join(str(output.get("text", "")) for output in outputs)
    assert text.count("the trainer's board did not answer") == 2, outputs
    assert "✅ 'adding' solved" in text
    errors = [output for output in outputs if output.get("output_type") == "error"]
    # the one error is the wrong answer's, as without a board
    assert [error["ename"] for error in errors] == ["ExerciseNotSolved"], errors
    assert not [o for o in outputs if o.get("name") == "stderr"], outputs
    assert report("02a", "adding", "solved", url=down, token="t") is not None
    assert report("02a", "adding", "solved", url="", token="") is None


def test_a_learner_joins_from_a_laptop_with_their_token(room, tmp_path):
    alice = room.provision("alice")
    token = join_token(room.name, alice)
    assert "ADMIN" not in base64.urlsafe_b64decode(token[5:]).decode()
    assert read_join_token(token)["env"] == alice.env
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LABKIT_", "DATABASE_URL", "PG", "REDIS_URL", "AMQP_URL"))}
    env |= {"LABKIT_STATE_DIR": str(laptop / "state"), "PYTHONPATH": os.getcwd()}

    def labkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "labkit.cli", *args], cwd=laptop, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT, check=False)

    joined = labkit("join", token)
    assert joined.returncode == 0, joined.stderr
    assert "alice" in joined.stdout and room.name in joined.stdout
    assert (laptop / "state" / "joined.json").stat().st_mode & 0o777 == 0o600
    status = labkit("status")
    assert f"joined room {room.name} as alice" in status.stdout, status.stdout
    # a kernel of that project: the postgres fixture's server is alice's tenant
    kernel = subprocess.run(
        [sys.executable, "-c",
         "from labkit import services; print(services.get('postgres').username)"],
        cwd=laptop, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert kernel.stdout.strip() == alice.tenant, kernel.stderr
    damaged = labkit("join", token[:-10])
    assert damaged.returncode != 0 and "damaged" in damaged.stderr
    left = labkit("join", "--leave")
    assert left.returncode == 0 and not (laptop / "state" / "joined.json").exists()


def test_the_classroom_commands_provision_tell_and_revoke(room, admin, tmp_path):
    env = {**os.environ, "LABKIT_STATE_DIR": str(tmp_path / "trainer"),
           "PYTHONPATH": os.getcwd(), "LABKIT_CLASSROOM_ROOM": room.name,
           services.ADMIN_ENV["postgres"]: admin.postgres or "",
           services.ADMIN_ENV["redis"]: admin.redis or "",
           services.ADMIN_ENV["rabbitmq"]: admin.rabbitmq or ""}

    def labkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "labkit.cli", "classroom", *args],
                              env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)

    made = labkit("provision", "alice", "bob", "--tokens")
    assert made.returncode == 0, made.stderr
    tokens = [line.split()[-1] for line in made.stdout.splitlines() if "lkj1." in line]
    assert len(tokens) == 2 and read_join_token(tokens[0])["learner"] == "alice"
    state = tmp_path / "trainer" / "classroom" / f"{room.name}.json"
    assert state.stat().st_mode & 0o777 == 0o600
    status = labkit("status")
    assert status.returncode == 0 and status.stdout.count(" ok ") >= 2, status.stdout
    bad = labkit("provision", "Alice")
    assert bad.returncode == 2 and "lowercase letters" in bad.stderr
    for name in ("alice", "bob"):
        assert labkit("revoke", name).returncode == 0
        assert not any(_left_on_servers(admin, tenant_name(room.name, name)).values())


def test_the_board_knows_each_learner_from_their_token_only(admin, tmp_path):
    room = Classroom(admin, name="tokens", board_url="http://127.0.0.1:9/board",
                     state_path=tmp_path / "room.json")
    try:
        alice, bob = room.provision_many(["alice", "bob"])
        assert alice.env["LABKIT_CLASSROOM_URL"] == "http://127.0.0.1:9/board"
        assert alice.env["LABKIT_CLASSROOM_TOKEN"] != bob.env["LABKIT_CLASSROOM_TOKEN"]
        assert room.learner_of_token(alice.env["LABKIT_CLASSROOM_TOKEN"]) == "alice"
        assert room.learner_of_token(bob.env["LABKIT_CLASSROOM_TOKEN"]) == "bob"
        assert room.learner_of_token(bob.env["LABKIT_CLASSROOM_TOKEN"][:-1]) is None
        assert room.learner_of_token("") is None
    finally:
        for name in ("alice", "bob"):
            room.revoke(name)


def test_learners_provisioned_at_once_from_threads_are_all_kept(room):
    """A hub spawns learners' servers concurrently; each spawn provisions."""
    names = ["ann", "ben", "cat", "ann"]  # ann twice: two spawns of the same learner
    made: dict[int, Learner] = {}

    def spawn(index: int) -> None:
        made[index] = room.provision(names[index])

    threads = [threading.Thread(target=spawn, args=(index,)) for index in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert sorted(made) == [0, 1, 2, 3]
    assert made[0] == made[3]
    assert [learner.name for learner in room.learners()] == ["ann", "ben", "cat"]
    assert all(status.healthy for status in room.status())


def test_a_join_url_serves_the_token_and_a_board_error_says_what_to_do(room):
    alice = room.provision("alice")
    token = join_token(room.name, alice)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/join/alice"
            self.send_response(200 if found else 404)
            self.end_headers()
            if found:
                self.wfile.write(token.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert read_join_token(f"{base}/join/alice")["env"] == alice.env
        with pytest.raises(ClassroomError, match="could not fetch a join token.*labkit join TOKEN"):
            read_join_token(f"{base}/join/nobody")
    finally:
        server.shutdown()
        server.server_close()


# A learner's kernel in a fault demo: each service written and read through the
# learner's own fault layer (`faults.proxied`, as lessons' clients are) or straight to
# the room's server (`services.get`), every client bounded by TIMEOUT_S (each learner's
# own, set in the same cell).
FAULT_DEMO_SETUP = """
import json, time
import pika, psycopg, redis
from labkit import faults, services
from labkit.shop.testing.outages import frozen

SERVICES = ("postgres", "redis", "rabbitmq")

def postgres_works(endpoint):
    with psycopg.connect(host=endpoint.host, port=endpoint.port, user=endpoint.username,
                         password=endpoint.password, dbname=endpoint.database,
                         connect_timeout=TIMEOUT_S, autocommit=True,
                         options=f"-c statement_timeout={TIMEOUT_S * 1000}") as conn:
        conn.execute("create table if not exists notes (body text)")
        conn.execute("insert into notes values ('written')")
        assert conn.execute("select count(*) from notes").fetchone()[0] > 0

def redis_works(endpoint):
    key = f"{endpoint.username}:note"  # the learner's Redis keys start with their tenant
    with redis.Redis.from_url(endpoint.url, socket_timeout=TIMEOUT_S,
                              socket_connect_timeout=TIMEOUT_S) as client:
        client.set(key, "written")
        assert client.get(key) == b"written"

def rabbitmq_works(endpoint):
    parameters = pika.URLParameters(endpoint.url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = parameters.stack_timeout = TIMEOUT_S
    parameters.blocked_connection_timeout = TIMEOUT_S
    with pika.BlockingConnection(parameters) as connection:
        channel = connection.channel()
        channel.queue_declare("notes")
        channel.basic_publish("", "notes", b"written")
        method, _, body = channel.basic_get("notes", auto_ack=True)
        assert body == b"written", (method, body)

WORKS = {"postgres": postgres_works, "redis": redis_works, "rabbitmq": rabbitmq_works}

def tried(endpoints):
    \"\"\"Each service's outcome ("ok" or the error's first line) and its seconds.\"\"\"
    outcomes = {}
    for service, endpoint in endpoints.items():
        started = time.monotonic()
        try:
            WORKS[service](endpoint)
            outcome = "ok"
        except Exception as exc:
            outcome = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0]
        outcomes[service] = {"outcome": outcome, "seconds": time.monotonic() - started}
    return outcomes

through_my_proxy = {service: faults.proxied(service) for service in SERVICES}
to_the_server = {service: services.get(service) for service in SERVICES}
print(json.dumps(tried(through_my_proxy)))
"""

# ada's fault demo, switched on as lessons do: PostgreSQL down, Redis and RabbitMQ hung.
FAULTS_ON = """
demo = [faults.outage("postgres"), faults.freeze("redis"), frozen("rabbitmq")]
print(json.dumps(tried(through_my_proxy)))
"""
FAULTS_OFF = """
for fault in demo:
    fault.off()
print(json.dumps(tried(through_my_proxy)))
"""
BOTH_PATHS = """
print(json.dumps({"through my proxy": tried(through_my_proxy), "to the server": tried(to_the_server)}))
"""
# A learner who breaks their link sees it fail within their clients' timeouts; one whose
# link is whole must not come near theirs: a margin for a loaded machine.
FAULTY_TIMEOUT_S = 2
HEALTHY_TIMEOUT_S = 10


class _LearnerKernel:
    """A Jupyter kernel started with only a learner's environment, as a hub's spawn
    gives their server (JupyterHub passes a few variables such as PATH, then the
    spawn hook's): nothing of this test's process, no admin URL."""

    def __init__(self, learner: Learner, cwd: Path) -> None:
        env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR")
               if key in os.environ}
        env |= {**learner.env, "PYTHONPATH": os.getcwd()}  # the kit of this checkout
        self.name = learner.name
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.blocking_client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=TIMEOUT)

    def run(self, code: str) -> Any:
        """Run a cell; what it printed last, read as JSON."""
        printed: list[str] = []
        errors: list[str] = []

        def collect(message: dict[str, Any]) -> None:
            content = message["content"]
            if message["msg_type"] == "stream" and content["name"] == "stdout":
                printed.append(content["text"])
            elif message["msg_type"] == "error":
                errors.append("\n".join(content["traceback"]))

        self.client.execute_interactive(code, timeout=TIMEOUT, output_hook=collect)
        assert not errors, f"{self.name}'s cell failed:\n" + "\n".join(errors)
        return json.loads("".join(printed).strip().splitlines()[-1])

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def test_a_learners_fault_demo_breaks_only_their_own_link(room, tmp_path):
    """Part 4 of issue 13: a fault demo runs for every learner at once without touching
    anyone else's services, because the fault layer is per learner's process, not on the
    shared servers."""
    ada, bob = room.provision_many(["ada", "bob"])
    kernels: list[_LearnerKernel] = []
    try:
        for learner, timeout_s in ((ada, FAULTY_TIMEOUT_S), (bob, HEALTHY_TIMEOUT_S)):
            (tmp_path / learner.name).mkdir()
            kernels.append(_LearnerKernel(learner, tmp_path / learner.name))
        ada_kernel, bob_kernel = kernels
        before = {k.name: k.run(f"TIMEOUT_S = {timeout_s}\n{FAULT_DEMO_SETUP}")
                  for k, timeout_s in zip(kernels, (FAULTY_TIMEOUT_S, HEALTHY_TIMEOUT_S))}
        for name, outcomes in before.items():
            assert all(o["outcome"] == "ok" for o in outcomes.values()), (name, outcomes)

        during = ada_kernel.run(FAULTS_ON)
        assert "Connection refused" in during["postgres"]["outcome"], during
        assert during["redis"]["outcome"].startswith("TimeoutError"), during
        assert "Timeout during AMQP handshake" in during["rabbitmq"]["outcome"], during

        # ada's faults are on: bob works through his own fault layer and straight to the
        # servers (so they were never paused), each service within his clients' bounds
        bob_sees = bob_kernel.run(BOTH_PATHS)
        for path, outcomes in bob_sees.items():
            for service, seen in outcomes.items():
                assert seen["outcome"] == "ok", (path, service, seen)
                assert seen["seconds"] < HEALTHY_TIMEOUT_S, (path, service, seen)
        print("bob's seconds while ada's faults were on:", {
            path: {service: round(seen["seconds"], 3) for service, seen in outcomes.items()}
            for path, outcomes in bob_sees.items()})

        still = ada_kernel.run(BOTH_PATHS)
        assert still["through my proxy"]["postgres"]["outcome"] != "ok", still
        assert all(o["outcome"] == "ok" for o in still["to the server"].values()), still

        after = ada_kernel.run(FAULTS_OFF)
        assert all(o["outcome"] == "ok" for o in after.values()), after
    finally:
        for kernel in kernels:
            kernel.shutdown()
