"""The vocabulary shared by every service and backend: endpoints, handles, specs, errors."""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import psutil

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service could not be provided. The message always says how to fix it."""


@dataclass(frozen=True)
class Endpoint:
    """Where a running service answers, and how it got there.

    `url` is what labkit's own clients take: a SQLAlchemy URL for postgres
    (``postgresql+psycopg://…``), ``redis://…`` for redis, ``amqp://…`` for rabbitmq,
    ``http://…`` for aws. Another project takes the parts it needs:

        >>> pg = services.get("postgres")
        >>> pg.host, pg.port, pg.user, pg.password, pg.database
        ('127.0.0.1', 32771, 'labkit_1a2b3c', '…', 'labkit')
        >>> pg.dsn            # libpq, psycopg, asyncpg, Django's dj-database-url
        'postgresql://labkit_1a2b3c:…@127.0.0.1:32771/labkit'
        >>> pg.conninfo       # libpq's key=value form
        'host=127.0.0.1 port=32771 user=labkit_1a2b3c password=… dbname=labkit'
        >>> pg.sqlalchemy_url
        'postgresql+psycopg://labkit_1a2b3c:…@127.0.0.1:32771/labkit'
        >>> services.environ("postgres")["DATABASE_URL"] == pg.dsn
        True
    """

    service: str
    backend: str
    url: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ready_seconds: float = 0.0
    origin: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    database: str | None = None

    @property
    def user(self) -> str | None:
        """The user name (the same as `username`, in libpq's word)."""
        return self.username

    @property
    def dsn(self) -> str:
        """The URL without a SQLAlchemy driver: what the service's plain clients read."""
        scheme, rest = self.url.split("://", 1)
        return f"{scheme.split('+', 1)[0]}://{rest}"

    @property
    def sqlalchemy_url(self) -> str:
        """A SQLAlchemy URL (``postgresql+psycopg://…``); only SQL databases have one."""
        if "+" not in self.url.split("://", 1)[0]:
            raise ServiceError(
                f"{self.service} is not a SQL database and has no SQLAlchemy URL: use .url or .dsn"
            )
        return self.url

    @property
    def conninfo(self) -> str:
        """libpq's key=value connection string (``host=… port=… dbname=…``), for postgres."""
        if not self.dsn.startswith(("postgresql://", "postgres://")):
            raise ServiceError(f"{self.service} is not PostgreSQL: conninfo is libpq's; use .dsn")
        pairs = {"host": self.host, "port": str(self.port), "user": self.username,
                 "password": self.password, "dbname": self.database}
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in pairs.items() if value)

    @property
    def bootstrap_servers(self) -> str:
        """Kafka's ``host:port[,host:port]`` list, the ``bootstrap.servers`` every client takes."""
        servers = self.extra.get("bootstrap_servers")
        if servers is None:
            raise ServiceError(f"{self.service} is not Kafka and has no bootstrap servers: "
                               "use .url")
        return servers

    @property
    def topic_prefix(self) -> str:
        """What this process's Kafka topics must start with: a tenant's ``lkt_….``, else ""."""
        return self.extra.get("topic_prefix", "")

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for printing."""
        return redact(self.url)

    def __str__(self) -> str:
        return f"{self.service} ({self.backend}) at {self.safe_url}"


def _conninfo_value(value: str) -> str:
    """Quote a conninfo value the way libpq reads it (spaces, quotes, backslashes)."""
    if value and not any(char in value for char in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Handle(Protocol):
    """A started service: its endpoint, and the real faults a lesson can inject."""

    endpoint: Endpoint

    def stop(self) -> None: ...

    def pause(self) -> None:
        """Freeze the server (it keeps its sockets but answers nothing)."""

    def resume(self) -> None: ...


@dataclass(frozen=True)
class Owner:
    """Who started a service: marks every container and process so strays can be swept."""

    pid: int
    started: float
    instance: str

    @property
    def labels(self) -> dict[str, str]:
        return {
            "labkit": "true",
            "labkit.owner.pid": str(self.pid),
            "labkit.owner.started": repr(self.started),
            "labkit.instance": self.instance,
        }


def current_owner() -> Owner:
    """This process as an owner, with a new instance id (one per started service)."""
    me = psutil.Process()
    return Owner(pid=me.pid, started=me.create_time(), instance=uuid.uuid4().hex[:12])


def owner_alive(pid: int, started: float) -> bool:
    """True if `pid` still runs and is the same process (pids get reused)."""
    try:
        return abs(psutil.Process(pid).create_time() - started) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


@dataclass(frozen=True)
class Binary:
    """A program the local backend needs, how to find it, and how to install it."""

    name: str
    find: Callable[[], object | None]
    install: str

    def found(self) -> bool:
        return self.find() is not None


@dataclass(frozen=True)
class ServiceSpec:
    """Everything labkit knows about one kind of service; its module builds one.

    Backends read it: docker calls `start_docker` with the image, local checks
    `binaries` then calls `start_local`, external checks a URL against `schemes`.
    """

    name: str
    schemes: tuple[str, ...]
    example_url: str
    default_port: int
    default_image: str | None = None
    start_docker: Callable[[str, Owner], Handle] | None = None
    start_local: Callable[[Owner], Handle] | None = None
    binaries: tuple[Binary, ...] = ()
    url_env_aliases: tuple[str, ...] = ()
    client_scheme: str | None = None
    database_in_path: bool = False
    endpoint_extra: Callable[[], Mapping[str, str]] = dict
    # The labkit extra that brings its clients and local server ("" for the core's services):
    # without it the service is absent, and `labkit doctor` warns instead of failing.
    install_extra: str = ""
    # What to do when its image cannot be pulled: `ci/images/build` builds postgres, redis
    # and rabbitmq from Debian packages; a service it does not build says its own way out.
    without_registry: str = "bash ci/images/build"
    extra_environ: Callable[[Endpoint], Mapping[str, str]] = lambda endpoint: {}

    @property
    def url_env(self) -> str:
        return f"LABKIT_{self.name.upper()}_URL"

    def url_from_env(self) -> tuple[str, str] | None:
        """(variable, url) of the first URL given in the environment, aliases after the name."""
        for variable in (self.url_env, *self.url_env_aliases):
            if os.environ.get(variable):
                return variable, os.environ[variable]
        return None

    @property
    def image_env(self) -> str:
        return f"LABKIT_{self.name.upper()}_IMAGE"

    @property
    def backend_env(self) -> str:
        return f"LABKIT_{self.name.upper()}_BACKEND"

    @property
    def image(self) -> str:
        return os.environ.get(self.image_env) or self.default_image or ""

    def missing_binaries(self) -> list[str]:
        return [binary.name for binary in self.binaries if not binary.found()]

    def from_url(self, url: str, origin: str = "environment") -> Endpoint:
        """Check a user-given URL against this service's rules and describe it."""
        parts = urlsplit(url)
        if parts.scheme not in self.schemes:
            raise ServiceError(
                f"{self.url_env} must start with {self.schemes[0]}://, got "
                f"{url.split(':')[0]}://… — for example {self.url_env}={self.example_url}"
            )
        if not parts.hostname:
            raise ServiceError(
                f"{self.url_env} has no host: {url!r} — e.g. {self.url_env}={self.example_url}"
            )
        if self.client_scheme and parts.scheme != self.client_scheme:
            url = f"{self.client_scheme}://{url.split('://', 1)[1]}"
        database = unquote(parts.path.lstrip("/")) or None if self.database_in_path else None
        return Endpoint(
            service=self.name,
            backend="external",
            url=url.rstrip("/"),
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else self.default_port),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            origin=origin,
            extra=self.endpoint_extra(),
            database=database,
        )

    def environ(self, endpoint: Endpoint) -> dict[str, str]:
        """`endpoint` as environment variables: LABKIT_<NAME>_URL, then the service's own."""
        return {self.url_env: endpoint.dsn, **self.extra_environ(endpoint)}


def random_secret(nbytes: int = 12) -> str:
    """A password that is safe in URLs and shell words."""
    return secrets.token_hex(nbytes)


def random_username(service: str) -> str:
    return f"{service[:8]}_{secrets.token_hex(3)}"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def redact(url: str) -> str:
    """`url` with its password masked, for printing."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
