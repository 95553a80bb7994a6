"""Redis: its URL rules, the binary it needs, and how each backend starts it."""

from __future__ import annotations

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
)
from labkit.services._docker import ContainerHandle, quiet_testcontainers, run_container
from labkit.services._local import LocalHandle, chown_tree, find_binary, launch, new_instance

DATABASE = "0"


def redis_server() -> str | None:
    """The redis-server binary (LABKIT_REDIS_SERVER, else PATH)."""
    return find_binary("redis-server", "LABKIT_REDIS_SERVER")


def start_docker(image: str, owner: Owner) -> ContainerHandle:
    with quiet_testcontainers():
        from testcontainers.community.redis import RedisContainer

    password = random_secret()
    container = RedisContainer(image, password=password)
    url = f"redis://:{password}@{{host}}:{{port}}/{DATABASE}"
    return run_container(container, "redis", 6379, owner, url, password=password,
                         database=DATABASE)


def start_local(owner: Owner) -> LocalHandle:
    binary = redis_server()
    if binary is None:
        raise ServiceError(
            "local redis needs redis-server: apt-get install redis-server / conda install redis"
        )
    password = random_secret()
    record = new_instance("redis", owner)
    workdir = Path(record.workdir)
    port = free_port()
    url = f"redis://:{password}@{LOOPBACK}:{port}/{DATABASE}"

    def probe() -> None:
        import redis

        redis.Redis(host=LOOPBACK, port=port, password=password, socket_timeout=2).ping()

    # The password goes in a file in the private workdir: on the command line, every
    # user of a shared machine could read it in `ps` until Redis rewrites its title.
    config = workdir / "redis.conf"
    config.write_text(f"requirepass {password}\n")
    chown_tree(workdir)
    command = [
        binary,
        str(config),
        "--port", str(port),
        "--bind", LOOPBACK,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--logfile", str(workdir / "redis.log"),
    ]
    executor, record, seconds = launch(record, command, port, url, probe, 30)
    endpoint = Endpoint(
        service="redis", backend="local", url=url, host=LOOPBACK, port=port,
        password=password, ready_seconds=seconds, origin=binary, database=DATABASE,
    )
    return LocalHandle(executor, record, endpoint)


SPEC = ServiceSpec(
    name="redis",
    schemes=("redis", "rediss"),
    example_url="redis://127.0.0.1:6379/0",
    default_port=6379,
    default_image="redis:7-alpine",
    start_docker=start_docker,
    start_local=start_local,
    binaries=(Binary("redis-server", redis_server, "apt-get install redis-server"),),
    database_in_path=True,
    extra_environ=lambda endpoint: {"REDIS_URL": endpoint.dsn},
)
