"""RabbitMQ: its URL rules, the binary it needs, and how each backend starts it."""

from __future__ import annotations

import base64
import os
import urllib.request
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

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
from labkit.services._docker import (
    ContainerHandle,
    publish_on_loopback,
    quiet_testcontainers,
    run_container,
)
from labkit.services._local import LocalHandle, chown_tree, find_binary, launch, new_instance

# The HTTP management API's port inside a container (-management images).
MANAGEMENT_PORT = 15672


def rabbitmq_server() -> str | None:
    """The real rabbitmq-server script (LABKIT_RABBITMQ_SERVER, Debian's, else PATH)."""
    # Debian's /usr/sbin/rabbitmq-server is a wrapper that `su`s to the rabbitmq user
    # and writes to /var/log; the real script sits in /usr/lib/rabbitmq/bin.
    return find_binary(
        "rabbitmq-server", "LABKIT_RABBITMQ_SERVER", ("/usr/lib/rabbitmq/bin/rabbitmq-server",)
    )


def loopback_distribution(epmd_port: int) -> dict[str, str]:
    """The environment that keeps a local node's Erlang distribution on 127.0.0.1.

    Besides AMQP, a RabbitMQ node listens for other Erlang nodes (the distribution
    port), which Erlang binds to every interface, and registers in an epmd, which also
    listens on every interface when the node has to start it. Only the cookie guards
    them, and whoever holds it runs any code on the node. So the distribution binds to
    127.0.0.1, and the node starts its own epmd on a free port, bound to 127.0.0.1
    (its processes carry the instance's mark, so stop and the sweep remove it): the
    machine's shared epmd on 4369, if one runs, is never used or changed.
    rabbitmqctl reaches the node with the same ERL_EPMD_PORT, HOME (the cookie) and
    RABBITMQ_NODENAME.
    """
    return {
        "ERL_EPMD_ADDRESS": LOOPBACK,
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
            "-kernel inet_dist_use_interface {" + LOOPBACK.replace(".", ",") + "}"
        ),
    }


def start_docker(image: str, owner: Owner) -> ContainerHandle:
    with quiet_testcontainers():
        from testcontainers.community.rabbitmq import RabbitMqContainer

    username, password = random_username("labkit"), random_secret()
    container = RabbitMqContainer(image, username=username, password=password)
    # The management API too (the -management images serve it; ci/images' does): tenants'
    # vhosts are made through it when `labkit up` shares this server. On loopback only.
    publish_on_loopback(container, MANAGEMENT_PORT)
    url = f"amqp://{username}:{password}@{{host}}:{{port}}/%2F"
    handle = run_container(container, "rabbitmq", 5672, owner, url, username, password)
    endpoint = handle.endpoint
    try:
        management_port = int(container.get_exposed_port(MANAGEMENT_PORT))
    except Exception:  # noqa: BLE001 (an image without the plugin publishes no such port)
        return handle
    management_url = f"http://{username}:{password}@{endpoint.host}:{management_port}"
    handle.endpoint = replace(endpoint, extra={**endpoint.extra,
                                               "management_url": management_url})
    return handle


def management_enabled() -> bool:
    """Whether a local RabbitMQ also serves the HTTP management API (LABKIT_RABBITMQ_MANAGEMENT).

    Tenants need it: vhosts and users are made through that API, the same one a CI
    service container or a workshop server offers. Off by default, as it costs a
    private server start-up time and memory that a single-user run does not need.
    """
    return os.environ.get("LABKIT_RABBITMQ_MANAGEMENT", "").lower() in ("1", "true", "yes", "on")


def start_local(owner: Owner) -> LocalHandle:
    binary = rabbitmq_server()
    if binary is None:
        raise ServiceError(
            "local rabbitmq needs rabbitmq-server: apt-get install rabbitmq-server "
            "(conda-forge has no RabbitMQ: use Docker or LABKIT_RABBITMQ_URL there)"
        )
    username, password = random_username("labkit"), random_secret()
    record = new_instance("rabbitmq", owner)
    workdir = Path(record.workdir)
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    management = management_enabled()
    management_port = free_port() if management else 0
    (workdir / "rabbitmq.conf").write_text(
        f"default_user = {username}\n"
        f"default_pass = {password}\n"
        "loopback_users = none\n"
        f"listeners.tcp.default = {LOOPBACK}:{port}\n"
        + (f"management.tcp.ip = {LOOPBACK}\nmanagement.tcp.port = {management_port}\n"
           if management else "")
    )
    (workdir / "enabled_plugins").write_text(
        "[rabbitmq_management].\n" if management else "[].\n"
    )
    (workdir / "rabbitmq-env.conf").write_text("")
    cookie = workdir / ".erlang.cookie"
    cookie.write_text(random_secret(16))
    cookie.chmod(0o400)
    chown_tree(workdir)
    url = f"amqp://{username}:{password}@{LOOPBACK}:{port}/%2F"

    management_url = f"http://{username}:{password}@{LOOPBACK}:{management_port}"

    def probe() -> None:
        import pika

        params = pika.URLParameters(url + "?connection_attempts=1&socket_timeout=2")
        pika.BlockingConnection(params).close()
        if management:
            _probe_management(management_url)

    env = {
        "HOME": str(workdir),
        "RABBITMQ_NODENAME": f"labkit-{owner.instance}@localhost",
        "RABBITMQ_DIST_PORT": str(dist_port),
        **loopback_distribution(epmd_port),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
        "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
    }
    executor, record, seconds = launch(
        record, [binary], port, url, probe, timeout=90, envvars=env
    )
    endpoint = Endpoint(
        service="rabbitmq", backend="local", url=url, host=LOOPBACK, port=port,
        username=username, password=password, ready_seconds=seconds, origin=binary,
        extra={"management_url": management_url} if management else {},
    )
    return LocalHandle(executor, record, endpoint)


def _probe_management(management_url: str) -> None:
    """Raises until the management API answers an authenticated request."""
    parts = urlsplit(management_url)
    request = urllib.request.Request(
        f"{parts.scheme}://{parts.hostname}:{parts.port}/api/overview"
    )
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=2):
        pass


SPEC = ServiceSpec(
    name="rabbitmq",
    schemes=("amqp", "amqps"),
    example_url="amqp://guest:guest@127.0.0.1:5672/%2F",
    default_port=5672,
    default_image="rabbitmq:3-management-alpine",
    start_docker=start_docker,
    start_local=start_local,
    binaries=(Binary("rabbitmq-server", rabbitmq_server, "apt-get install rabbitmq-server"),),
    url_env_aliases=("LABKIT_AMQP_URL",),
    extra_environ=lambda endpoint: {"AMQP_URL": endpoint.dsn},
)
