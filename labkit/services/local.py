"""Private servers from the binaries on this machine: no Docker needed.

Each instance lives in its own temporary directory, listens on 127.0.0.1 on a free
port, has random credentials, and is started and stopped by a mirakuru executor
(which waits for the port and kills the whole process group). PostgreSQL refuses to
run as root, so as root every server runs as an unprivileged user (LABKIT_RUN_AS,
default ``nobody``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from mirakuru import TCPExecutor
from mirakuru.exceptions import ProcessExitedWithError, TimeoutExpired

from labkit.services.base import (
    Endpoint,
    Owner,
    ServiceError,
    free_port,
    random_secret,
    random_username,
)
from labkit.services.ownership import INSTANCE_ENV, LocalRecord, kill_instance, sweep_local

LOOPBACK = "127.0.0.1"


class ReadyTCPExecutor(TCPExecutor):
    """A TCP executor that also asks the server itself whether it is ready.

    An open port is not a ready server: PostgreSQL answers "the database system is
    starting up" and RabbitMQ closes connections until its boot steps are done.
    """

    def __init__(self, *args, probe: Callable[[], object], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._probe = probe

    def after_start_check(self) -> bool:
        if not super().after_start_check():
            return False
        try:
            self._probe()
        except Exception:  # noqa: BLE001 (any error from the probe means 'not yet')
            return False
        return True


class LocalHandle:
    """A private server process: its endpoint, stop, and pause/resume by SIGSTOP/SIGCONT."""

    def __init__(self, executor: TCPExecutor, record: LocalRecord, endpoint: Endpoint) -> None:
        self.executor = executor
        self.record = record
        self.endpoint = endpoint

    def _processes(self) -> list[psutil.Process]:
        # PostgreSQL moves each connection's backend into a process group of its own,
        # so stopping the group alone would leave open connections answering.
        leader = psutil.Process(self.executor.process.pid)
        return [leader, *leader.children(recursive=True)]

    def pause(self) -> None:
        for proc in self._processes():
            proc.suspend()

    def resume(self) -> None:
        for proc in reversed(self._processes()):
            proc.resume()

    def stop(self) -> None:
        try:
            self.resume()
        except psutil.NoSuchProcess:
            pass
        try:
            self.executor.stop()
        finally:
            kill_instance(self.record)


def run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged account servers run as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("LABKIT_RUN_AS", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(
            f"running as root, labkit starts servers as user {name!r}, which does not exist — "
            "set LABKIT_RUN_AS to an unprivileged user"
        ) from None


def _privilege_prefix() -> list[str]:
    user = run_as_user()
    if user is None:
        return []
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


def _workdir(service: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"labkit-{service}-"))
    user = run_as_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _chown_tree(path: Path) -> None:
    user = run_as_user()
    if user is None:
        return
    for item in [path, *path.rglob("*")]:
        os.chown(item, user.pw_uid, user.pw_gid)


def find_binary(name: str, env: str, patterns: tuple[str, ...] = ()) -> str | None:
    """A server binary: the env override, then PATH, then well-known install dirs."""
    override = os.environ.get(env)
    if override:
        candidate = Path(override) / name if Path(override).is_dir() else Path(override)
        return str(candidate) if candidate.exists() else None
    for pattern in patterns:
        matches = sorted(glob.glob(pattern), key=_version_key)
        if matches:
            return matches[-1]
    return shutil.which(name)


def _version_key(path: str) -> list[int]:
    return [int(part) for part in Path(path).parts if part.isdigit()]


def postgres_bindir() -> Path | None:
    initdb = find_binary(
        "initdb", "LABKIT_PG_BINDIR", ("/usr/lib/postgresql/*/bin/initdb",)
    )
    return Path(initdb).resolve().parent if initdb else None


def redis_server() -> str | None:
    return find_binary("redis-server", "LABKIT_REDIS_SERVER")


def rabbitmq_server() -> str | None:
    # Debian's /usr/sbin/rabbitmq-server is a wrapper that `su`s to the rabbitmq user
    # and writes to /var/log; the real script sits in /usr/lib/rabbitmq/bin.
    return find_binary(
        "rabbitmq-server", "LABKIT_RABBITMQ_SERVER", ("/usr/lib/rabbitmq/bin/rabbitmq-server",)
    )


def _launch(
    service: str,
    owner: Owner,
    workdir: Path,
    command: list[str],
    port: int,
    url: str,
    probe: Callable[[], object],
    timeout: int,
    envvars: dict[str, str] | None = None,
    sig_stop: int = signal.SIGTERM,
) -> tuple[TCPExecutor, LocalRecord, float]:
    record = LocalRecord(
        service=service,
        instance=owner.instance,
        owner_pid=owner.pid,
        owner_started=owner.started,
        workdir=str(workdir),
        url=url,
    )
    record.save()
    executor = ReadyTCPExecutor(
        _privilege_prefix() + command,
        host=LOOPBACK,
        port=port,
        timeout=timeout,
        sleep=0.05,
        probe=probe,
        cwd=str(workdir),
        envvars={INSTANCE_ENV: owner.instance, **(envvars or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stop_signal=sig_stop,
    )
    began = time.perf_counter()
    try:
        executor.start()
    except (TimeoutExpired, ProcessExitedWithError) as exc:
        logs = _tail_logs(workdir)
        kill_instance(record)
        raise ServiceError(
            f"local {service} did not become ready within {timeout}s ({exc.__class__.__name__}).\n"
            f"{logs}\nCheck the binary works (`{command[0]} --version`), or use another backend."
        ) from None
    # mirakuru starts the server in a new session: its pid is the process group to sweep.
    record.group = executor.process.pid
    record.group_started = psutil.Process(record.group).create_time()
    record.save()
    return executor, record, time.perf_counter() - began


def _tail_logs(workdir: Path, lines: int = 15) -> str:
    tails = []
    for log in sorted(workdir.rglob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(tails) or "(no log written)"


def start_local_postgres(owner: Owner) -> LocalHandle:
    bindir = postgres_bindir()
    if bindir is None:
        raise ServiceError(
            "local postgres needs initdb and postgres: install PostgreSQL "
            "(apt-get install postgresql / conda install postgresql), or set LABKIT_PG_BINDIR"
        )
    sweep_local()
    username, password = random_username("labkit"), random_secret()
    workdir = _workdir("postgres")
    (workdir / "pwfile").write_text(password + "\n")
    _chown_tree(workdir)
    initdb = subprocess.run(
        _privilege_prefix()
        + [
            str(bindir / "initdb"),
            "--pgdata", str(workdir / "data"),
            "--username", username,
            "--pwfile", str(workdir / "pwfile"),
            "--auth", "scram-sha-256",
            "--encoding", "UTF8",
            "--locale", "C.UTF-8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
        check=False,  # the exit code is reported below with initdb's own words
    )
    if initdb.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ServiceError(f"initdb failed (exit {initdb.returncode}):\n{initdb.stderr.strip()}")
    port = free_port()
    url = f"postgresql+psycopg://{username}:{password}@{LOOPBACK}:{port}/labkit"

    def probe() -> None:
        import psycopg

        with psycopg.connect(
            host=LOOPBACK, port=port, user=username, password=password,
            dbname="postgres", connect_timeout=2, autocommit=True,
        ) as conn:
            if conn.execute("select 1 from pg_database where datname = 'labkit'").fetchone() is None:
                conn.execute("create database labkit")

    command = [
        str(bindir / "postgres"),
        "-D", str(workdir / "data"),
        "-p", str(port),
        "-k", str(workdir),
        "-c", "listen_addresses=127.0.0.1",
        # Tests need no durability: turning it off makes commits ~10x cheaper.
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
        "-c", "logging_collector=on",
        "-c", f"log_directory={workdir}",
        "-c", "log_filename=postgres.log",
    ]
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
    executor, record, seconds = _launch(
        "postgres", owner, workdir, command, port, url, probe, timeout=60, sig_stop=signal.SIGINT
    )
    endpoint = Endpoint(
        service="postgres", backend="local", url=url, host=LOOPBACK, port=port,
        username=username, password=password, ready_seconds=seconds, origin=str(bindir),
    )
    return LocalHandle(executor, record, endpoint)


def start_local_redis(owner: Owner) -> LocalHandle:
    binary = redis_server()
    if binary is None:
        raise ServiceError(
            "local redis needs redis-server: apt-get install redis-server / conda install redis"
        )
    sweep_local()
    password = random_secret()
    workdir = _workdir("redis")
    port = free_port()
    url = f"redis://:{password}@{LOOPBACK}:{port}/0"

    def probe() -> None:
        import redis

        redis.Redis(host=LOOPBACK, port=port, password=password, socket_timeout=2).ping()

    command = [
        binary,
        "--port", str(port),
        "--bind", LOOPBACK,
        "--requirepass", password,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--logfile", str(workdir / "redis.log"),
    ]
    executor, record, seconds = _launch("redis", owner, workdir, command, port, url, probe, 30)
    endpoint = Endpoint(
        service="redis", backend="local", url=url, host=LOOPBACK, port=port,
        password=password, ready_seconds=seconds, origin=binary,
    )
    return LocalHandle(executor, record, endpoint)


def start_local_rabbitmq(owner: Owner) -> LocalHandle:
    binary = rabbitmq_server()
    if binary is None:
        raise ServiceError(
            "local rabbitmq needs rabbitmq-server: apt-get install rabbitmq-server "
            "(conda-forge has no RabbitMQ: use Docker or LABKIT_RABBITMQ_URL there)"
        )
    sweep_local()
    username, password = random_username("labkit"), random_secret()
    workdir = _workdir("rabbitmq")
    port, dist_port = free_port(), free_port()
    (workdir / "rabbitmq.conf").write_text(
        f"default_user = {username}\n"
        f"default_pass = {password}\n"
        "loopback_users = none\n"
        f"listeners.tcp.default = {LOOPBACK}:{port}\n"
    )
    (workdir / "enabled_plugins").write_text("[].\n")
    (workdir / "rabbitmq-env.conf").write_text("")
    cookie = workdir / ".erlang.cookie"
    cookie.write_text(random_secret(16))
    cookie.chmod(0o400)
    _chown_tree(workdir)
    url = f"amqp://{username}:{password}@{LOOPBACK}:{port}/%2F"

    def probe() -> None:
        import pika

        params = pika.URLParameters(url + "?connection_attempts=1&socket_timeout=2")
        pika.BlockingConnection(params).close()

    env = {
        "HOME": str(workdir),
        "RABBITMQ_NODENAME": f"labkit-{owner.instance}@localhost",
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
        "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
    }
    executor, record, seconds = _launch(
        "rabbitmq", owner, workdir, [binary], port, url, probe, timeout=90, envvars=env
    )
    endpoint = Endpoint(
        service="rabbitmq", backend="local", url=url, host=LOOPBACK, port=port,
        username=username, password=password, ready_seconds=seconds, origin=binary,
    )
    return LocalHandle(executor, record, endpoint)
