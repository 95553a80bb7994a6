"""Live services for tests and lessons: one API over three backends.

    >>> from labkit import services
    >>> pg = services.get("postgres")      # started on first use, reused after
    >>> pg.url
    'postgresql+psycopg://labkit_1a2b3c:…@127.0.0.1:32771/labkit'

The backend is chosen per service by LABKIT_<SERVICE>_BACKEND, else LABKIT_BACKEND
(``auto`` by default): a URL in LABKIT_<SERVICE>_URL, else services that `labkit up`
runs, else Docker if an engine answers, else local binaries. A started service lives
as long as this Python process (a Jupyter kernel, a pytest run) and stops at exit.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from labkit.services import docker as _docker
from labkit.services import local as _local
from labkit.services.base import (
    BACKENDS,
    Endpoint,
    Handle,
    Owner,
    ServiceError,
    ServiceSpec,
)
from labkit.services.external import ExternalHandle
from labkit.services.ownership import current_owner
from labkit.services.session import up_urls

__all__ = [
    "Endpoint",
    "ServiceError",
    "ServiceSpec",
    "backend_for",
    "check",
    "get",
    "handle",
    "paused",
    "register",
    "running",
    "specs",
    "stop",
    "stop_all",
]

AUTO_DOCKER = "engine answers"
_SPECS: dict[str, ServiceSpec] = {}
_RUNNING: dict[str, Handle] = {}
_LOCK = threading.RLock()


def register(spec: ServiceSpec) -> None:
    """Make a service available to `get` (replacing one of the same name)."""
    _SPECS[spec.name] = spec


def specs() -> dict[str, ServiceSpec]:
    return dict(_SPECS)


def _spec(name: str) -> ServiceSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ServiceError(
            f"unknown service {name!r}: labkit knows {', '.join(sorted(_SPECS))}"
        ) from None


def backend_for(name: str) -> tuple[str, str]:
    """(backend, reason) for a service, without starting anything."""
    spec = _spec(name)
    wanted = (os.environ.get(spec.backend_env) or os.environ.get("LABKIT_BACKEND") or "auto").lower()
    if wanted not in (*BACKENDS, "auto"):
        raise ServiceError(
            f"LABKIT_BACKEND={wanted!r} is not one of auto, docker, local, external"
        )
    given = spec.url_from_env()
    if wanted == "external":
        return "external", given[0] if given else spec.url_env
    if wanted != "auto":
        return wanted, "LABKIT_BACKEND"
    if given:
        return "external", given[0]
    if name in up_urls():
        return "external", "labkit up"
    if spec.start_docker is not None and _docker.engine_answers():
        return "docker", AUTO_DOCKER
    if _local_possible(spec):
        return "local", "binaries found"
    raise ServiceError(
        f"no backend can provide {name}: set {spec.url_env}=…, or start Docker "
        f"(engine at {_docker.docker_host()} did not answer), or install "
        f"{', '.join(spec.local_binaries) or 'its server'} for LABKIT_BACKEND=local. "
        "`labkit doctor` shows what is missing."
    )


def check(name: str) -> tuple[str, str]:
    """Like `backend_for`, but also verify that backend can serve now (doctor, setup()).

    Raises ServiceError with the fix when, say, LABKIT_BACKEND=docker but no engine answers.
    """
    spec = _spec(name)
    backend, reason = backend_for(name)
    if backend == "docker":
        if spec.start_docker is None:
            raise ServiceError(f"{name} has no docker backend: set {spec.backend_env}=local")
        _docker.docker_client()
        if not _docker.image_present(spec.image):
            fallback = ", else local" if reason == AUTO_DOCKER and _local_possible(spec) else ""
            reason += f"; {spec.image} pulled on first use{fallback}"
    elif backend == "local":
        missing = [b for b in spec.local_binaries if not _binary_found(b)]
        if missing or spec.start_local is None:
            raise ServiceError(
                f"LABKIT_BACKEND=local but {name}'s server is not installed "
                f"({', '.join(missing) or 'no local backend'} not found): install it, or use docker"
            )
    elif backend == "external":
        given = _given_url(spec)
        if not given:
            raise ServiceError(f"LABKIT_BACKEND=external needs {spec.url_env}, e.g. "
                               f"{spec.url_env}={endpoint_example(name)}")
        spec.from_url(given[1])
    return backend, reason


def _given_url(spec: ServiceSpec) -> tuple[str, str] | None:
    """(origin, url) of a server labkit is given: an environment variable, or `labkit up`."""
    given = spec.url_from_env()
    if given:
        return given
    url = up_urls().get(spec.name)
    return ("labkit up", url) if url else None


def _local_possible(spec: ServiceSpec) -> bool:
    return spec.start_local is not None and all(_binary_found(b) for b in spec.local_binaries)


def _binary_found(name: str) -> bool:
    finders = {
        "initdb": _local.postgres_bindir,
        "redis-server": _local.redis_server,
        "rabbitmq-server": _local.rabbitmq_server,
    }
    finder = finders.get(name)
    if finder is not None:
        return finder() is not None
    from shutil import which

    return which(name) is not None


def _start(spec: ServiceSpec, backend: str, owner: Owner) -> Handle:
    if backend == "external":
        given = _given_url(spec)
        if not given:
            raise ServiceError(
                f"LABKIT_BACKEND=external needs {spec.url_env}, e.g. "
                f"{spec.url_env}={endpoint_example(spec.name)}"
            )
        origin, url = given
        return ExternalHandle(replace(spec.from_url(url), origin=origin))
    if backend == "docker":
        if spec.start_docker is None:
            raise ServiceError(f"{spec.name} has no docker backend: use LABKIT_{spec.name.upper()}_BACKEND=local")
        _docker.docker_client()
        return spec.start_docker(spec.image, owner)
    if spec.start_local is None:
        raise ServiceError(f"{spec.name} has no local backend: use docker or give {spec.url_env}")
    return spec.start_local(owner)


def endpoint_example(name: str) -> str:
    from labkit.services.external import _example

    return _example(name)


def handle(name: str) -> Handle:
    """The running service `name`, started on first use and reused for the process."""
    with _LOCK:
        if name not in _RUNNING:
            spec = _spec(name)
            backend, reason = backend_for(name)
            try:
                _RUNNING[name] = _start(spec, backend, current_owner())
            except _docker.ImageUnavailable as exc:
                if reason != AUTO_DOCKER or not _local_possible(spec):
                    raise
                # auto promised "whatever works here": an engine without images and no
                # registry (offline venue) is not a reason to stop when binaries exist.
                print(f"labkit: {exc}\nlabkit: using local binaries for {name} instead.")
                _RUNNING[name] = _start(spec, "local", current_owner())
        return _RUNNING[name]


def get(name: str) -> Endpoint:
    """The endpoint of service `name` (postgres, redis, rabbitmq, …), started if needed."""
    return handle(name).endpoint


def running() -> dict[str, Endpoint]:
    with _LOCK:
        return {name: h.endpoint for name, h in _RUNNING.items()}


def stop(name: str) -> None:
    with _LOCK:
        h = _RUNNING.pop(name, None)
    if h is not None:
        h.stop()


def stop_all() -> None:
    """Stop every service this process started (registered to run at exit)."""
    for name in list(_RUNNING):
        try:
            stop(name)
        except Exception as exc:  # noqa: BLE001 (at exit, report and go on stopping the others)
            print(f"labkit: could not stop {name}: {exc}")


@contextmanager
def paused(name: str) -> Iterator[Endpoint]:
    """Freeze a service for the block: a real outage, not a mock.

    Clients see what they see when a server hangs: connects and queries time out.
    """
    h = handle(name)
    h.pause()
    try:
        yield h.endpoint
    finally:
        h.resume()


atexit.register(stop_all)

from labkit.services import catalog as _catalog

del _catalog
