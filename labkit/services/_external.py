"""Services someone else runs, given by URL: CI service containers, a workshop server,
or `labkit up` in another terminal."""

from __future__ import annotations

from labkit.services._base import Endpoint, Handle, Owner, ServiceError, ServiceSpec
from labkit.services._state import up_urls


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


def given_url(spec: ServiceSpec) -> tuple[str, str] | None:
    """(origin, url) of a server labkit is given: an environment variable, or `labkit up`."""
    given = spec.url_from_env()
    if given:
        return given
    url = up_urls().get(spec.name)
    return ("labkit up", url) if url else None


class ExternalBackend:
    """A server at a URL from the environment or from this project's `labkit up`."""

    name = "external"

    def available(self, spec: ServiceSpec) -> bool:
        return given_url(spec) is not None

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        """The given server's endpoint, checked against the service's URL rules."""
        given = given_url(spec)
        if not given:
            raise ServiceError(
                f"LABKIT_BACKEND=external needs {spec.url_env}, e.g. "
                f"{spec.url_env}={spec.example_url}"
            )
        origin, url = given
        return spec.from_url(url, origin)

    def check(self, spec: ServiceSpec) -> str:
        self.endpoint(spec)
        return ""

    def start(self, spec: ServiceSpec, owner: Owner) -> Handle:
        return ExternalHandle(self.endpoint(spec))
