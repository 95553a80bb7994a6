"""Services someone else runs, given by URL: CI service containers, a workshop server,
or `labkit up` in another terminal."""

from __future__ import annotations

from urllib.parse import urlsplit

from labkit.services.base import Endpoint, ServiceError

_SCHEMES = {
    "postgres": ("postgresql", "postgresql+psycopg", "postgres"),
    "redis": ("redis", "rediss"),
    "rabbitmq": ("amqp", "amqps"),
}
_DEFAULT_PORTS = {"postgres": 5432, "redis": 6379, "rabbitmq": 5672}


class ExternalHandle:
    """A service labkit did not start: it neither stops nor pauses it."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def stop(self) -> None:
        """Nothing to do: the service belongs to someone else."""

    def pause(self) -> None:
        raise ServiceError(
            f"{self.endpoint.service} is external ({self.endpoint.safe_url}): labkit cannot "
            "pause a server it does not run. Run this lesson on the docker or local backend."
        )

    resume = pause


def endpoint_from_url(service: str, url: str, origin: str = "environment") -> Endpoint:
    """Check a user-given URL and describe it as an Endpoint."""
    parts = urlsplit(url)
    schemes = _SCHEMES.get(service)
    if schemes and parts.scheme not in schemes:
        raise ServiceError(
            f"LABKIT_{service.upper()}_URL must start with {schemes[0]}://, got {url.split(':')[0]}://… "
            f"— for example {_example(service)}"
        )
    if not parts.hostname:
        raise ServiceError(f"LABKIT_{service.upper()}_URL has no host: {url!r} — e.g. {_example(service)}")
    if service == "postgres" and parts.scheme != "postgresql+psycopg":
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return Endpoint(
        service=service,
        backend="external",
        url=url,
        host=parts.hostname,
        port=parts.port or _DEFAULT_PORTS.get(service, 0),
        username=parts.username,
        password=parts.password,
        origin=origin,
    )


def _example(service: str) -> str:
    return {
        "postgres": "postgresql://user:pass@127.0.0.1:5432/db",
        "redis": "redis://127.0.0.1:6379/0",
        "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
        "aws": "http://127.0.0.1:4566",
    }.get(service, f"{service}://host:port")
