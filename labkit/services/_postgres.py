"""PostgreSQL: its URL rules, the binaries it needs, and how each backend starts it.

Clients get a SQLAlchemy URL (``postgresql+psycopg://…``) in `Endpoint.url`; a plain
``postgresql://`` URL is accepted from the environment and given the driver.
"""

from __future__ import annotations

import signal
from pathlib import Path

from labkit.services._base import (
    LOOPBACK,
    Binary,
    Endpoint,
    Owner,
    ServiceError,
    ServiceSpec,
    free_port,
    random_secret,
    random_username,
)
from labkit.services._docker import ContainerHandle, quiet_testcontainers, run_container
from labkit.services._local import (
    LocalHandle,
    chown_tree,
    find_binary,
    launch,
    new_instance,
    run_recorded,
)
from labkit.services._ownership import kill_instance

DATABASE = "labkit"
# Tests need no durability: turning it off makes commits ~10x cheaper.
NO_DURABILITY = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def postgres_bindir() -> Path | None:
    """The directory of initdb and postgres (LABKIT_PG_BINDIR, PATH, Debian's versioned dirs)."""
    initdb = find_binary("initdb", "LABKIT_PG_BINDIR", ("/usr/lib/postgresql/*/bin/initdb",))
    return Path(initdb).resolve().parent if initdb else None


def start_docker(image: str, owner: Owner) -> ContainerHandle:
    with quiet_testcontainers():
        from testcontainers.community.postgres import PostgresContainer

    username, password = random_username("labkit"), random_secret()
    container = PostgresContainer(
        image, username=username, password=password, dbname=DATABASE, driver="psycopg"
    )
    container.with_command(" ".join(("postgres", *NO_DURABILITY)))
    url = f"postgresql+psycopg://{username}:{password}@{{host}}:{{port}}/{DATABASE}"
    return run_container(container, "postgres", 5432, owner, url, username, password, DATABASE)


def start_local(owner: Owner) -> LocalHandle:
    bindir = postgres_bindir()
    if bindir is None:
        raise ServiceError(
            "local postgres needs initdb and postgres: install PostgreSQL "
            "(apt-get install postgresql / conda install postgresql), or set LABKIT_PG_BINDIR"
        )
    username, password = random_username("labkit"), random_secret()
    record = new_instance("postgres", owner)  # before initdb: a kill during it leaves nothing
    workdir = Path(record.workdir)
    (workdir / "pwfile").write_text(password + "\n")
    chown_tree(workdir)
    initdb = run_recorded(
        record,
        [
            str(bindir / "initdb"),
            "--pgdata", str(workdir / "data"),
            "--username", username,
            "--pwfile", str(workdir / "pwfile"),
            "--auth", "scram-sha-256",
            "--encoding", "UTF8",
            "--locale", "C.UTF-8",
            "--no-sync",
        ],
    )
    if initdb.returncode != 0:
        kill_instance(record)
        raise ServiceError(f"initdb failed (exit {initdb.returncode}):\n{initdb.stderr.strip()}")
    port = free_port()
    url = f"postgresql+psycopg://{username}:{password}@{LOOPBACK}:{port}/{DATABASE}"

    def probe() -> None:
        import psycopg

        with psycopg.connect(
            host=LOOPBACK, port=port, user=username, password=password,
            dbname="postgres", connect_timeout=2, autocommit=True,
        ) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f"create database {DATABASE}")

    command = [
        str(bindir / "postgres"),
        "-D", str(workdir / "data"),
        "-p", str(port),
        "-k", str(workdir),
        "-c", "listen_addresses=127.0.0.1",
        *NO_DURABILITY,
        "-c", "logging_collector=on",
        "-c", f"log_directory={workdir}",
        "-c", "log_filename=postgres.log",
    ]
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
    executor, record, seconds = launch(
        record, command, port, url, probe, timeout=60, sig_stop=signal.SIGINT
    )
    endpoint = Endpoint(
        service="postgres", backend="local", url=url, host=LOOPBACK, port=port,
        username=username, password=password, ready_seconds=seconds, origin=str(bindir),
        database=DATABASE,
    )
    return LocalHandle(executor, record, endpoint)


def _environ(endpoint: Endpoint) -> dict[str, str]:
    """DATABASE_URL (12-factor apps, dj-database-url) and the PG* variables libpq reads."""
    names = {"PGHOST": endpoint.host, "PGPORT": str(endpoint.port), "PGUSER": endpoint.username,
             "PGPASSWORD": endpoint.password, "PGDATABASE": endpoint.database}
    return {"DATABASE_URL": endpoint.dsn, **{k: v for k, v in names.items() if v}}


SPEC = ServiceSpec(
    name="postgres",
    schemes=("postgresql", "postgresql+psycopg", "postgres"),
    example_url="postgresql://user:pass@127.0.0.1:5432/db",
    default_port=5432,
    default_image="postgres:16-alpine",
    start_docker=start_docker,
    start_local=start_local,
    binaries=(Binary("initdb", postgres_bindir, "apt-get install postgresql"),),
    client_scheme="postgresql+psycopg",
    database_in_path=True,
    extra_environ=_environ,
)
