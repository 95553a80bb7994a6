"""A workshop on a real JupyterHub: three learners, their own services, the trainer's board.

The hub runs `classroom/jupyterhub_config.py` itself (ports, folders and the dummy login
set by a small config around it) on loopback with configurable-http-proxy from npm
(`bash ci/classroom-proxy` installs it under the user's cache) over PostgreSQL, Redis and
RabbitMQ servers this module starts. Learners are made through the hub's REST API, their
servers spawned, and code runs in each learner's kernel through the server's kernel API,
as JupyterLab would send it. Then: no admin credentials in a kernel, A's credentials refused
on B's database, keys and vhost, every learner's checks on the board, a learner refused when
writing another's rows or opening the board, the board in headless Chromium with the stuck
learner highlighted (screenshot in out/classroom/), and nothing left when it is all stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.exceptions
import psutil
import psycopg
import pytest
import redis as redis_lib
import requests
from jupyterlab_browser import CHROMIUM_FLAGS, ROOT
from jupyterlab_browser import missing as browser_missing
from servers import local_servers

from labkit import services
from labkit.classroom import Classroom
from labkit.services import TenantAdmin
from labkit.waiting import wait_until

LEARNERS = ("ada", "bob", "cyd")
LESSON = "lessons/00_welcome.ipynb"
STUCK = "cyd"  # fails the same check three times
TRAINER = "trainer"
HOME = urllib.parse.quote("/hub/home", safe="")
TIMEOUT = 120  # a bound on a loaded 2-core machine, never a speed target


def _missing() -> str | None:
    from labkit.classroom.hub import proxy_command

    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        return "jupyterhub is not installed (pip install -e '.[classroom]')"
    if proxy_command() is None:
        return "configurable-http-proxy not found: run `bash ci/classroom-proxy` (needs npm)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


@pytest.fixture(scope="module")
def room_servers() -> Iterator[TenantAdmin]:
    """The room's PostgreSQL, Redis and RabbitMQ (with its management API), owned here."""
    with local_servers("postgres", "redis", "rabbitmq") as started:
        postgres, redis, rabbitmq = (h.endpoint for h in started.values())
        yield TenantAdmin(postgres=postgres.dsn, redis=redis.url,
                          rabbitmq=rabbitmq.extra["management_url"])


class Hub:
    def __init__(self, url: str, token: str, process: subprocess.Popen[bytes], env: dict[str, str]):
        self.url, self.token, self.process, self.env = url, token, process, env

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(method, f"{self.url}/hub/api/{path}", timeout=30,
                                headers={"Authorization": f"token {self.token}"}, **kwargs)

    def login(self, name: str) -> requests.Session:
        """A browser-like session of `name` (any password: the dummy authenticator), landing
        on the hub's home page rather than spawning a server."""
        session = requests.Session()
        session.get(f"{self.url}/hub/login", timeout=30)
        response = session.post(f"{self.url}/hub/login?next={HOME}", timeout=30, data={
            "username": name, "password": "x", "_xsrf": session.cookies.get("_xsrf", "")})
        assert response.ok, f"login of {name}: HTTP {response.status_code}"
        return session


@pytest.fixture(scope="module")
def hub(room_servers: TenantAdmin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    from labkit.classroom.hub import proxy_command

    folder = tmp_path_factory.mktemp("hub")
    port, hub_port, proxy_api, board_port = (services.free_port() for _ in range(4))
    token = uuid.uuid4().hex
    config = folder / "jupyterhub_config.py"
    config.write_text(f"""
load_subconfig({str(ROOT / 'classroom' / 'jupyterhub_config.py')!r})
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.ConfigurableHTTPProxy.pid_file = {str(folder / 'proxy.pid')!r}
c.JupyterHub.db_url = "sqlite:///{folder / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(folder / 'cookie_secret')!r}
c.JupyterHub.services.append({{"name": "driver", "api_token": {token!r}}})
c.JupyterHub.load_roles.append({{"name": "driver", "services": ["driver"], "scopes": [
    "admin:users", "admin:servers", "tokens", "access:servers", "list:users"]}})
""")
    env = {
        **os.environ,
        "PATH": f"{Path(proxy_command() or '').parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),  # the learners' kernels import this checkout's labkit
        "LABKIT_HUB_URL": f"http://127.0.0.1:{port}",
        "LABKIT_HUB_HOMES": str(folder / "homes" / "{username}"),
        "LABKIT_BOARD_PORT": str(board_port),
        "LABKIT_STATE_DIR": str(folder / "state"),
        "LABKIT_POSTGRES_ADMIN_URL": room_servers.url("postgres"),
        "LABKIT_REDIS_ADMIN_URL": room_servers.url("redis"),
        "LABKIT_RABBITMQ_ADMIN_URL": room_servers.url("rabbitmq"),
        "LABKIT_HUB_TRAINERS": TRAINER,
    }
    for name in ("LABKIT_AWS_ADMIN_URL", "LABKIT_CLASSROOM_URL", "LABKIT_CLASSROOM_TOKEN"):
        env.pop(name, None)
    log = (folder / "hub.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)],
                               cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    hub = Hub(f"http://127.0.0.1:{port}", token, process, env)
    started = time.monotonic()
    try:
        _wait(lambda: _answers(f"{hub.url}/hub/api/"), "the hub to answer", process, folder)
        print(f"\nhub, proxy and board answered in {time.monotonic() - started:.1f} s")
        yield hub
    finally:
        _stop_all(hub, folder)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.ConnectionError:
        return False


def _wait(ready: Callable[[], object], what: str, process: subprocess.Popen[bytes],
          folder: Path) -> None:
    """labkit's wait_until, failing at once (with the hub's log) if the hub exits."""
    def hub_running_and_ready() -> object:
        if process.poll() is not None:
            pytest.fail(f"the hub exited ({process.returncode}) before {what}:\n"
                        + (folder / "hub.log").read_text()[-3000:])
        return ready()

    try:
        wait_until(hub_running_and_ready, timeout=TIMEOUT, interval=0.5, message=what)
    except TimeoutError as exc:
        pytest.fail(f"{exc}:\n" + (folder / "hub.log").read_text()[-3000:])


def _stop_all(hub: Hub, folder: Path) -> None:
    """Stop the servers and the hub, check nothing of theirs runs, revoke the learners."""
    try:
        family = psutil.Process(hub.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:  # the hub failed to start: the test says why
        family = []
    hub.process.send_signal(signal.SIGTERM)  # the hub stops its servers, proxy and board
    try:
        hub.process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        hub.process.kill()
    left = {}
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            if _running(process):
                left[process.pid] = " ".join(process.cmdline()[:4])
                process.kill()
    assert not left, f"still running after the hub stopped: {left}"
    room = _room(hub)
    tenants = [learner.tenant for learner in room.learners()]
    for learner in room.learners():
        room.revoke(learner.name)
    assert room.learners() == []
    with psycopg.connect(hub.env["LABKIT_POSTGRES_ADMIN_URL"]) as admin:
        databases = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
        roles = {row[0] for row in admin.execute("SELECT rolname FROM pg_roles")}
    with redis_lib.Redis.from_url(hub.env["LABKIT_REDIS_ADMIN_URL"]) as admin_redis:
        redis_users = {u if isinstance(u, str) else u.decode() for u in admin_redis.acl_users()}
    assert not set(tenants) & (databases | roles | redis_users), "a revoked tenant is left"


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _room(hub: Hub) -> Classroom:
    admin = TenantAdmin(postgres=hub.env["LABKIT_POSTGRES_ADMIN_URL"],
                        redis=hub.env["LABKIT_REDIS_ADMIN_URL"],
                        rabbitmq=hub.env["LABKIT_RABBITMQ_ADMIN_URL"])
    return Classroom(admin, state_path=Path(hub.env["LABKIT_STATE_DIR"]) / "classroom" / "room.json")


def run_in_kernel(hub: Hub, user: str, token: str, kernel: str, code: str,
                  expect_error: bool = False) -> str:
    """Run `code` in the learner's kernel over its websocket, as JupyterLab sends a cell;
    returns what it printed (and its error, which must come if `expect_error`)."""
    from websockets.sync.client import connect

    ws_url = hub.url.replace("http", "ws", 1) + f"/user/{user}/api/kernels/{kernel}/channels"
    msg_id = uuid.uuid4().hex
    request = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                   "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }
    printed, error = [], None
    with connect(ws_url, additional_headers={"Authorization": f"token {token}"},
                 open_timeout=30) as socket:
        socket.send(json.dumps(request))
        while True:
            message = json.loads(socket.recv(timeout=TIMEOUT))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                printed.append(content["text"])
            elif kind == "error":
                error = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
    if expect_error:
        assert error is not None, f"{user}'s kernel raised nothing; printed:\n{''.join(printed)}"
        return "".join(printed) + error
    assert error is None, f"{user}'s kernel raised:\n{error}\nprinted:\n{''.join(printed)}"
    return "".join(printed)


@pytest.fixture(scope="module")
def learners(hub: Hub) -> dict[str, dict[str, str]]:
    """The three learners, their servers spawned, each with a kernel and a user token."""
    assert hub.api("POST", "users", json={"usernames": list(LEARNERS)}).status_code == 201
    started = time.monotonic()
    for name in LEARNERS:
        response = hub.api("POST", f"users/{name}/server")
        assert response.status_code in (201, 202), response.text
    _wait(lambda: all(hub.api("GET", f"users/{n}").json()["servers"].get("", {}).get("ready")
                      for n in LEARNERS), "the learners' servers", hub.process,
          Path(hub.env["LABKIT_HUB_HOMES"]).parents[1])
    print(f"{len(LEARNERS)} servers spawned (tenant, lessons copied, server ready) in "
          f"{time.monotonic() - started:.1f} s")
    made = {}
    for name in LEARNERS:
        token = hub.api("POST", f"users/{name}/tokens", json={"expires_in": 900}).json()["token"]
        # a session on the learner's copy of lesson 00, as opening it in JupyterLab makes
        session = requests.post(
            f"{hub.url}/user/{name}/api/sessions", timeout=60,
            headers={"Authorization": f"token {token}"},
            json={"path": LESSON, "type": "notebook", "name": Path(LESSON).name,
                  "kernel": {"name": "python3"}})
        assert session.status_code == 201, session.text
        made[name] = {"token": token, "kernel": session.json()["kernel"]["id"]}
    return made


def lesson_cells(hub: Hub, learner: str) -> list[str]:
    """The code cells of the learner's own copy of lesson 00 (the spawn hook made it)."""
    import nbformat

    copy = Path(hub.env["LABKIT_HUB_HOMES"].format(username=learner)) / LESSON
    return [c.source for c in nbformat.read(copy, as_version=4).cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def worked(hub: Hub, learners: dict[str, dict[str, str]]) -> dict[str, str]:
    """Each learner works through lesson 00's first exercise in their kernel: ada and bob
    predict right, cyd predicts wrong three times. Returns each kernel's LABKIT_* env."""
    seen = {}
    for name, learner in learners.items():
        run = functools.partial(run_in_kernel, hub, name, learner["token"], learner["kernel"])
        cells = lesson_cells(hub, name)
        setup, fixture, check = cells[0], cells[3], next(
            c for c in cells if c.startswith("%%check session-count"))
        for cell in (setup, fixture, *cells[6:8]):  # setup(), the fixture, its two cells
            run(cell)
        if name == STUCK:
            for _ in range(3):
                run("prediction = 3")
                failed = run(check, expect_error=True)
                assert "not solved yet" in failed and "board" not in failed, failed
        else:
            run("prediction = 2")
            solved = run(check)
            assert "solved" in solved and "board" not in solved, solved
        seen[name] = run("import json, os\nprint(json.dumps(dict(os.environ)))")
    return seen


def _env(printed: str) -> dict[str, str]:
    env: dict[str, str] = json.loads(printed)
    return env


def test_a_learners_kernel_has_their_tenant_and_no_admin_credential(hub, worked):
    admin_secrets = [urllib.parse.urlsplit(hub.env[key]).password for key in (
        "LABKIT_POSTGRES_ADMIN_URL", "LABKIT_REDIS_ADMIN_URL", "LABKIT_RABBITMQ_ADMIN_URL")]
    room = _room(hub)
    for name, printed in worked.items():
        env = _env(printed)
        assert env["LABKIT_POSTGRES_URL"] == room.learner(name).env["LABKIT_POSTGRES_URL"]
        assert not [k for k in env if "ADMIN" in k], f"{name}'s kernel: {sorted(env)}"
        leaked = [k for k, v in env.items() for secret in admin_secrets if secret and secret in v]
        assert not leaked, f"{name}'s kernel holds an admin password in {leaked}"
        assert "LABKIT_STATE_DIR" not in env, "the room's state (credentials) is the hub's own"


def test_a_learners_credentials_are_refused_on_anothers_services(hub, worked):
    room = _room(hub)
    ada, bob = (room.learner(name).env for name in ("ada", "bob"))
    ada_pg, bob_pg = (urllib.parse.urlsplit(e["LABKIT_POSTGRES_URL"]) for e in (ada, bob))
    with pytest.raises(psycopg.OperationalError, match="permission denied|not permitted"):
        psycopg.connect(ada_pg._replace(path=bob_pg.path).geturl(), connect_timeout=10)
    with psycopg.connect(ada["LABKIT_POSTGRES_URL"], connect_timeout=10) as own:
        assert own.execute("SELECT 1").fetchone() == (1,)  # the refusal is not a broken URL
    bob_prefix = f"{room.learner('bob').tenant}:"  # the keys bob's Redis user may touch
    with (redis_lib.Redis.from_url(ada["LABKIT_REDIS_URL"]) as client,
          pytest.raises(redis_lib.exceptions.NoPermissionError)):
        client.get(f"{bob_prefix}anything")
    ada_mq, bob_mq = (urllib.parse.urlsplit(e["LABKIT_RABBITMQ_URL"]) for e in (ada, bob))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.URLParameters(ada_mq._replace(path=bob_mq.path).geturl()))
    pika.BlockingConnection(pika.URLParameters(ada["LABKIT_RABBITMQ_URL"])).close()


def test_every_learners_checks_are_on_the_board_and_the_stuck_one_flagged(hub, worked):
    trainer = hub.login(TRAINER)
    response = trainer.get(f"{hub.url}/services/board/api/board", timeout=30)
    assert response.status_code == 200, response.text[:500]
    board = response.json()
    rows = {row["name"]: row for row in board["learners"]}
    key = "00_welcome/session-count"
    cells = {name: rows[name]["cells"].get(key, {}) for name in LEARNERS}
    assert {name: cell.get("outcome") for name, cell in cells.items()} == {
        "ada": "solved", "bob": "solved", "cyd": "wrong"}, board
    assert rows[STUCK]["cells"][key]["attempts"] == 3
    assert [name for name in LEARNERS if rows[name]["stuck"]] == [STUCK]
    assert all(rows[name]["health"] == "ok" for name in LEARNERS), rows
    assert rows["ada"]["server"] == "/user/ada/"


def test_a_learner_cannot_write_anothers_rows_nor_open_the_board(hub, learners, worked):
    ada_server_token = _env(worked["ada"])["LABKIT_CLASSROOM_TOKEN"]
    progress = f"{hub.url}/services/board/progress"
    report = {"lesson": "00_welcome", "exercise": "session-count", "outcome": "solved"}
    forged = requests.post(progress, json={**report, "learner": STUCK}, timeout=30,
                           headers={"Authorization": f"Bearer {ada_server_token}"})
    assert forged.status_code == 403, forged.text
    unknown = requests.post(progress, json=report, timeout=30,
                            headers={"Authorization": f"Bearer {uuid.uuid4().hex}"})
    assert unknown.status_code == 403, unknown.text
    rows = {(r.learner, r.exercise): r.outcome for r in _room(hub).progress()}
    assert rows[(STUCK, "session-count")] == "wrong", "a refused report changed a row"
    learner = hub.login("ada")
    page = learner.get(f"{hub.url}/services/board/", timeout=30)
    assert page.status_code == 403, f"a learner opened the board: HTTP {page.status_code}"
    data = learner.get(f"{hub.url}/services/board/api/board", timeout=30)
    assert data.status_code == 403 or "learners" not in data.text


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_board_in_chromium_shows_three_learners_and_the_stuck_one(hub, worked):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    screenshot = ROOT / "out" / "classroom" / "board.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 420})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text)
                    if message.type == "error" else None)
            page.goto(f"{hub.url}/hub/login?next={HOME}")
            page.fill("input[name=username]", TRAINER)
            page.fill("input[name=password]", "x")
            page.click("[type=submit]")
            page.wait_for_url("**/hub/**")
            page.goto(f"{hub.url}/services/board/")
            try:
                page.wait_for_selector("#board tbody tr", timeout=30_000)
            except PlaywrightTimeout:
                page.screenshot(path=str(screenshot), full_page=True)
                pytest.fail(f"no learner on the board at {page.url} (screenshot {screenshot}):\n"
                            + page.inner_text("body")[:2000] + "\npage errors: " + repr(errors))
            names = page.locator("#board tbody tr th").all_inner_texts()
            stuck = page.locator("#board tbody tr.stuck th").all_inner_texts()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    print(f"board screenshot: {screenshot}")
    assert names == list(LEARNERS)
    assert stuck == [STUCK]


def test_a_restarted_server_keeps_the_learners_tenant_and_their_edited_lessons(hub, worked):
    """Last: it replaces bob's server (and its token). Provisioning at each spawn is
    idempotent, and the lessons' copy never overwrites what the learner changed."""
    import nbformat

    room = _room(hub)
    before = room.learner("bob").env
    copy = Path(hub.env["LABKIT_HUB_HOMES"].format(username="bob")) / LESSON
    notebook = nbformat.read(copy, as_version=4)
    notebook.cells[0].source += "\n# bob's own note"
    nbformat.write(notebook, copy)
    assert hub.api("DELETE", "users/bob/server").status_code in (202, 204)
    folder = Path(hub.env["LABKIT_HUB_HOMES"]).parents[1]
    _wait(lambda: not hub.api("GET", "users/bob").json()["servers"], "bob's server to stop",
          hub.process, folder)
    assert hub.api("POST", "users/bob/server").status_code in (201, 202)
    _wait(lambda: hub.api("GET", "users/bob").json()["servers"].get("", {}).get("ready"),
          "bob's server to start again", hub.process, folder)
    assert room.learner("bob").env == before, "a new spawn changed bob's credentials"
    assert "# bob's own note" in copy.read_text(), "the spawn hook overwrote bob's lesson"
