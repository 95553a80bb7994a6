"""The vocabulary shared by every backend: endpoints, handles, specs and errors."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

BACKENDS = ("docker", "local", "external")


class ServiceError(RuntimeError):
    """A service could not be provided. The message always says how to fix it."""


@dataclass(frozen=True)
class Endpoint:
    """Where a running service answers, and how it got there.

    `url` is what clients take: a SQLAlchemy URL for postgres
    (``postgresql+psycopg://…``), ``redis://…`` for redis, ``amqp://…`` for rabbitmq.
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

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for printing."""
        return redact(self.url)

    def __str__(self) -> str:
        return f"{self.service} ({self.backend}) at {self.safe_url}"


class Handle(Protocol):
    """A started service: its endpoint, and the real faults a lesson can inject."""

    endpoint: Endpoint

    def stop(self) -> None: ...

    def pause(self) -> None:
        """Freeze the server (it keeps its sockets but answers nothing)."""

    def resume(self) -> None: ...


@dataclass(frozen=True)
class ServiceSpec:
    """How to provide one kind of service on each backend.

    Adding a service (S3 through moto, say) is one `register(ServiceSpec(...))`:
    callers keep asking `labkit.services.get(name)`.
    """

    name: str
    default_image: str
    start_docker: Callable[[str, Owner], Handle] | None
    start_local: Callable[[Owner], Handle] | None
    from_url: Callable[[str], Endpoint]
    local_binaries: tuple[str, ...] = ()
    default_port: int = 0
    url_env_aliases: tuple[str, ...] = ()

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
        return os.environ.get(self.image_env) or self.default_image


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


def random_secret(nbytes: int = 12) -> str:
    """A password that is safe in URLs and shell words."""
    return secrets.token_hex(nbytes)


def random_username(service: str) -> str:
    return f"{service[:8]}_{secrets.token_hex(3)}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def redact(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
