"""The services and backends labkit knows, listed here and nowhere else.

Adding a service is a module like `_redis.py` that builds a `ServiceSpec`,
plus one line in SERVICES. Adding a backend is a class with `available`, `check` and
`start` (see `Backend`), plus one line in BACKENDS.
"""

from __future__ import annotations

from typing import Protocol

from labkit.services import _aws, _kafka, _postgres, _rabbitmq, _redis
from labkit.services._base import Handle, Owner, ServiceError, ServiceSpec
from labkit.services._docker import DockerBackend
from labkit.services._external import ExternalBackend
from labkit.services._local import LocalBackend
from labkit.services._tenants import TenantBackend


class Backend(Protocol):
    """One way to provide services: docker, local, external, or a tenant of a shared server."""

    name: str

    def available(self, spec: ServiceSpec) -> bool:
        """Whether `auto` may pick this backend for `spec` (cheap: starts nothing)."""

    def check(self, spec: ServiceSpec) -> str:
        """Raise ServiceError with the fix if this backend cannot serve `spec` now;
        else return a note for the reason shown to the user (may be empty)."""

    def start(self, spec: ServiceSpec, owner: Owner) -> Handle:
        """Start `spec` for `owner` and wait until it answers."""


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        _postgres.SPEC,
        _redis.SPEC,
        _rabbitmq.SPEC,
        _aws.SPEC,
        _kafka.SPEC,
    )
}

BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (DockerBackend(), LocalBackend(), ExternalBackend(), TenantBackend())
}


def spec_for(name: str) -> ServiceSpec:
    """The spec of service `name`, or a ServiceError naming the ones labkit knows."""
    try:
        return SERVICES[name]
    except KeyError:
        raise ServiceError(
            f"unknown service {name!r}: labkit knows {', '.join(sorted(SERVICES))}"
        ) from None


def backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ServiceError(
            f"LABKIT_BACKEND={name!r} is not one of auto, {', '.join(BACKENDS)}"
        ) from None
