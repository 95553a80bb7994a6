"""How a server starts, and what starting one costs: the measurements behind lesson 01.

    >>> from labkit.startup import watch_postgres_startup, fresh_postgres_start
    >>> watch_postgres_startup()   # one row per start: when the port opened, when it answered
    [{'start': 'fresh', 'port open (s)': 0.21, 'ready (s)': 0.24, 'refused queries': 3, …}, …]
    >>> fresh_postgres_start()     # (backend, seconds) from nothing to answering queries
    ('local', 1.7)

A server opens its port before it can serve: `watch_startup` polls both, the port and a
real query, and reports the gap and what the server said while it refused. The other
helpers time what a fixture's lifetime pays (a fresh start, a lookup of a running
service) and set the scene (environment variables for a block, a Testcontainers test
that skips where no Docker engine answers).
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labkit import services

POLL_SECONDS = 0.003  # between two looks at a starting server: a gap of ms must show


@contextmanager
def with_env(**variables: str | None) -> Iterator[None]:
    """Set environment variables for the block (None removes one); restore them after."""
    saved = {name: os.environ.get(name) for name in variables}
    _set_env(variables)
    try:
        yield
    finally:
        _set_env(saved)


def _set_env(variables: dict[str, str | None]) -> None:
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def watch_startup(address: dict[str, Any], began: float, deadline_s: float = 60) -> dict[str, Any]:
    """When a starting PostgreSQL opened its port, and when it first ran ``SELECT 1``.

    `address` holds psycopg's connection keywords (host, port, user, password, dbname);
    `began` is the ``time.perf_counter()`` of the start. Returns the two times in seconds
    since `began`, how many queries the server refused in between, and its last refusal.
    Raises TimeoutError, with what was seen, if it does not answer within `deadline_s`.
    """
    import psycopg

    port_open: float | None = None
    refusals: list[str] = []
    while time.perf_counter() < began + deadline_s:
        try:
            socket.create_connection((address["host"], address["port"]), timeout=1).close()
        except OSError:
            time.sleep(POLL_SECONDS)
            continue
        if port_open is None:
            port_open = time.perf_counter() - began
        try:
            with psycopg.connect(**address, connect_timeout=2) as connection:
                connection.execute("SELECT 1")
            return {
                "port open (s)": port_open,
                "ready (s)": time.perf_counter() - began,
                "refused queries": len(refusals),
                "last refusal": refusals[-1] if refusals else "",
            }
        except psycopg.OperationalError as exc:
            refusals.append(_reason(exc))
            time.sleep(POLL_SECONDS)
    raise TimeoutError(
        f"PostgreSQL on port {address['port']} not ready within {deadline_s}s: "
        f"port open: {port_open is not None}, last refusal: {refusals[-1:] or 'none'}"
    )


def _reason(error: Exception) -> str:
    """The server's own words in a psycopg error: its FATAL line, without libpq's preamble."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return next((line for line in lines if "FATAL" in line), lines[-1]).split("failed: ")[-1]


def watch_postgres_startup() -> list[dict[str, Any]]:
    """Start a second PostgreSQL and watch it with `watch_startup`: one row per start.

    With PostgreSQL's binaries (the local backend's), two starts of one server: fresh,
    then after a crash (SIGQUIT, PostgreSQL's immediate shutdown: no checkpoint, as after
    a power cut), when it replays its write-ahead log before it answers. Else, with a
    Docker engine and the postgres image, one fresh container. Else no rows: the
    external backend only has URLs, and starts nothing.
    """
    if services.postgres_bindir() is not None:
        return _watch_local_postgres()
    image = services.specs()["postgres"].image
    if services.engine_answers() and services.image_present(image):
        return _watch_postgres_container(image)
    return []


def _watch_local_postgres() -> list[dict[str, Any]]:
    bindir = services.postgres_bindir()
    assert bindir is not None
    # Recorded like any local server: if the kernel dies meanwhile, its reaper (or the
    # next sweep) removes this one too.
    record = services.new_instance("postgres-startup", services.current_owner())
    rows: list[dict[str, Any]] = []
    server = None
    try:
        workdir, password = Path(record.workdir), services.random_secret()
        (workdir / "pwfile").write_text(password + "\n")
        services.chown_tree(workdir)
        services.run_recorded(record, [
            str(bindir / "initdb"), "-D", str(workdir / "data"), "-U", "demo",
            "--pwfile", str(workdir / "pwfile"), "--auth", "scram-sha-256", "--no-sync",
        ]).check_returncode()
        port = services.free_port()
        address: dict[str, Any] = {"host": services.LOOPBACK, "port": port, "user": "demo",
                                   "password": password, "dbname": "postgres"}
        server, began = _start_postgres(bindir, record, port)
        rows.append({"start": "fresh", **watch_startup(address, began)})
        import psycopg

        with psycopg.connect(**address, autocommit=True) as connection:  # a log to replay
            connection.execute("CREATE TABLE events AS SELECT g AS id, md5(g::text) AS body "
                               "FROM generate_series(1, 300000) AS g")
        server.send_signal(signal.SIGQUIT)
        server.wait(timeout=30)
        server, began = _start_postgres(bindir, record, port)
        rows.append({"start": "after a crash", **watch_startup(address, began)})
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # fast shutdown
            server.wait(timeout=30)
        services.kill_instance(record)  # its files, and anything a failure left running
    return rows


def _start_postgres(
    bindir: Path, record: services.LocalRecord, port: int
) -> tuple[subprocess.Popen[bytes], float]:
    workdir = Path(record.workdir)
    command = [str(bindir / "postgres"), "-D", str(workdir / "data"), "-p", str(port),
               "-k", str(workdir), "-c", f"listen_addresses={services.LOOPBACK}", "-c", "fsync=off"]
    began = time.perf_counter()
    server = subprocess.Popen(services.privilege_prefix() + command, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, services.INSTANCE_ENV: record.instance})
    return server, began


def _watch_postgres_container(image: str) -> list[dict[str, Any]]:
    password = services.random_secret()
    services.watch_containers()  # removed by this process's reaper if it dies meanwhile
    began = time.perf_counter()
    container = services.docker_client().containers.run(
        image, detach=True,
        labels={**services.current_owner().labels, "labkit.service": "postgres-startup"},
        environment={"POSTGRES_USER": "demo", "POSTGRES_PASSWORD": password},
        ports={"5432/tcp": (services.LOOPBACK, None)},
    )
    try:
        container.reload()
        port = int(container.ports["5432/tcp"][0]["HostPort"])
        address = {"host": services.LOOPBACK, "port": port, "user": "demo",
                   "password": password, "dbname": "postgres"}
        return [{"start": f"fresh container ({image})", **watch_startup(address, began)}]
    finally:
        container.remove(force=True)


def fresh_postgres_start() -> tuple[str, float] | None:
    """Start and stop a private PostgreSQL as labkit does: (backend, seconds to ready).

    The backend this process uses if it starts servers (docker or local); on the external
    backend, the local one where its binaries are installed, else docker where an engine
    answers with the image. None where neither can start a server here.
    """
    chosen = services.get("postgres").backend
    if chosen not in ("docker", "local"):
        image = services.specs()["postgres"].image
        if services.postgres_bindir() is not None:
            chosen = "local"
        elif services.engine_answers() and services.image_present(image):
            chosen = "docker"
        else:
            return None
    began = time.perf_counter()
    handle = services.start("postgres", chosen)
    seconds = time.perf_counter() - began
    handle.stop()
    return chosen, seconds


def median_seconds(call: Callable[[], object], times: int = 1000) -> float:
    """The median time of `times` calls of `call`: what one call costs, without outliers."""
    if times < 1:
        raise ValueError(f"need times >= 1, got {times}")
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        spent.append(time.perf_counter() - began)
    return statistics.median(spent)


def skip_without_docker(image: str) -> None:
    """Skip the calling test unless a Docker engine answers and `image` is on this machine.

    Where the engine cannot get Testcontainers' reaper (Ryuk) image, Ryuk is turned off:
    labkit labels its containers and sweeps those whose owner is gone instead.
    """
    import pytest
    from testcontainers.core.config import testcontainers_config

    if not services.engine_answers():
        pytest.skip(f"no Docker engine answers at {services.docker_host()}")
    if not services.image_present(image):
        pytest.skip(f"image {image} is not on this machine (`labkit up` pulls it, "
                    "or set LABKIT_POSTGRES_IMAGE to one that is)")
    if not services.image_present(testcontainers_config.ryuk_image):
        testcontainers_config.ryuk_disabled = True
