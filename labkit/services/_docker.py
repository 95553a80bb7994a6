"""Services as containers, through testcontainers' own modules.

Images default to the official ones (``postgres:16-alpine``…); LABKIT_<SERVICE>_IMAGE
overrides them, for instance with the images `ci/images/build` makes where no
registry is reachable. Ports are published on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

from labkit.services._base import LOOPBACK, Endpoint, Handle, Owner, ServiceError, ServiceSpec
from labkit.services._ownership import STATE_LABEL, sweep_containers
from labkit.services._reaper import watch_containers
from labkit.services._state import state_dir


@contextmanager
def quiet_testcontainers() -> Iterator[None]:
    """Import testcontainers when a container starts (it costs ~0.3 s), without its noise.

    testcontainers deprecates its own decorators internally; nothing a learner can act on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class ImageUnavailable(ServiceError):
    """The image is neither on this machine nor pullable (no registry, offline venue)."""


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


@lru_cache(maxsize=1)
def docker_client() -> Any:
    """A docker-py client whose engine answered a ping, or a ServiceError saying what to do."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except DockerException as exc:
        raise ServiceError(
            f"Docker engine not reachable at {docker_host()} ({exc.__class__.__name__}) — "
            "start Docker, or set LABKIT_BACKEND=local (needs initdb, redis-server and "
            "rabbitmq-server on PATH), or give URLs with LABKIT_POSTGRES_URL=postgresql://…"
        ) from None
    return client


def engine_answers() -> bool:
    try:
        docker_client()
    except ServiceError:
        docker_client.cache_clear()
        return False
    return True


def image_present(image: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        docker_client().images.get(image)
    except ImageNotFound:
        return False
    return True


def why_no_containers(*images: str) -> str | None:
    """Why this process cannot run containers from `images`, or None where it can.

    Nothing is pulled: a lesson that needs an image says which one is missing and how to
    get it, instead of waiting on a registry that may not answer (an offline venue, CI).
    """
    if not engine_answers():
        return f"no Docker engine answers at {docker_host()}"
    absent = [image for image in images if not image_present(image)]
    if absent:
        return (
            f"{', '.join(absent)} not on this machine (`labkit up` pulls it, or set "
            "LABKIT_POSTGRES_IMAGE / LABKIT_REDIS_IMAGE to images you have)"
        )
    return None


def containers_of(owner: Owner) -> list[str]:
    """`owner`'s containers, running or stopped, as ``"<short id> (<status>)"``.

    The Docker SDK's ``docker ps -a --filter label=labkit.instance=…``: every container
    labkit starts carries its owner's labels, so this finds exactly what one owner left.
    """
    found = docker_client().containers.list(
        all=True, filters={"label": f"labkit.instance={owner.instance}"}
    )
    return [f"{container.short_id} ({container.status})" for container in found]


class ContainerHandle:
    """A started container: its endpoint, stop, and pause/resume for fault lessons."""

    def __init__(self, container: DockerContainer, endpoint: Endpoint) -> None:
        self.container = container
        self.endpoint = endpoint

    @property
    def wrapped(self) -> Any:
        return self.container.get_wrapped_container()

    def pause(self) -> None:
        self.wrapped.pause()

    def resume(self) -> None:
        self.wrapped.unpause()

    def stop(self) -> None:
        self.container.stop()


def engine_is_local() -> bool:
    """True when the engine runs on this machine (a unix socket or named pipe)."""
    host = os.environ.get("DOCKER_HOST", "")
    return host == "" or host.startswith(("unix://", "npipe://"))


def _reach_published_ports_on_loopback() -> None:
    """Tell testcontainers to find our ports on 127.0.0.1, where we publish them.

    Where /.dockerenv exists (CI runners, dev containers) testcontainers assumes it
    runs inside a container and probes the bridge gateway instead, which never answers
    for loopback-only ports. Explicit TESTCONTAINERS_* settings still win.
    """
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    if not os.environ.get("TESTCONTAINERS_CONNECTION_MODE"):
        testcontainers_config.connection_mode_override = ConnectionMode.docker_host
    if not (os.environ.get("TESTCONTAINERS_HOST_OVERRIDE") or os.environ.get("TC_HOST")):
        testcontainers_config.tc_host_override = LOOPBACK


def publish_on_loopback(container: DockerContainer, port: int) -> DockerContainer:
    """Publish the container's `port` on 127.0.0.1, at a host port the engine picks.

    `with_exposed_ports` publishes on every interface: anyone on the venue Wi-Fi could
    reach a test database and its well-known test password. A remote engine
    (DOCKER_HOST=tcp://…) publishes on its own machine, so there the port is exposed
    as usual. Either way `get_container_host_ip()` and `get_exposed_port()` find it.
    """
    if engine_is_local():
        _reach_published_ports_on_loopback()
        # docker-py's (host ip, host port) form; testcontainers' with_bind_ports takes no ip.
        container.ports[str(port)] = (LOOPBACK, None)  # type: ignore[assignment]
    else:
        container.with_exposed_ports(port)
    return container


def prepare_container(container: DockerContainer, port: int, owner: Owner, service: str) -> None:
    """Label the container with its owner, whose reaper removes it if the owner dies
    first; publish `port` on loopback for a local engine."""
    watch_containers()
    # The project's state dir too: `labkit down --all` removes this project's containers
    # only, never another checkout's (a CI run beside a developer's kernels).
    container.with_kwargs(labels={**owner.labels, "labkit.service": service,
                                  STATE_LABEL: str(state_dir())})
    publish_on_loopback(container, port)


@lru_cache(maxsize=1)
def _use_ryuk_where_it_can_run() -> None:
    """Keep testcontainers' Ryuk reaper where its image can be had; else rely on labkit's sweep.

    Without a registry the reaper's image cannot be pulled and every start would fail;
    labkit labels its containers and sweeps those of dead owners, so nothing leaks.
    """
    from testcontainers.core.config import testcontainers_config

    if testcontainers_config.ryuk_disabled:
        return
    image = testcontainers_config.ryuk_image
    try:
        ensure_image(image)
    except ImageUnavailable:
        print(f"labkit: Ryuk ({image}) unavailable; labkit's own sweep removes orphans.")
        testcontainers_config.ryuk_disabled = True


def start_container(container: DockerContainer, service: str) -> float:
    client = docker_client()
    sweep_containers(client)
    _use_ryuk_where_it_can_run()
    ensure_image(container.image)
    began = time.perf_counter()
    try:
        container.start()
    except Exception as exc:
        try:
            container.stop()
        except Exception:  # noqa: BLE001, S110 (it may never have been created)
            pass
        raise ServiceError(
            f"{service} container from {container.image} did not become ready: {exc}. "
            f"Look at `docker logs` of the container, or try LABKIT_BACKEND=local."
        ) from exc
    return time.perf_counter() - began


def ensure_image(image: str) -> None:
    """Pull the image if missing, saying so: a pull can take minutes on venue Wi-Fi."""
    from docker.errors import APIError

    if image_present(image):
        return
    print(f"labkit: pulling {image} (first use; `labkit up` pre-pulls)…", flush=True)
    try:
        docker_client().images.pull(image)
    except APIError as exc:
        raise ImageUnavailable(
            f"image {image} is not on this machine and could not be pulled ({exc.explanation}). "
            "Without a registry, build it with `bash ci/images/build` and point "
            "LABKIT_<SERVICE>_IMAGE at it, or use LABKIT_BACKEND=local."
        ) from None


def run_container(
    container: DockerContainer,
    service: str,
    port: int,
    owner: Owner,
    url: str,
    username: str | None = None,
    password: str | None = None,
    database: str | None = None,
) -> ContainerHandle:
    """Start a container and describe it; `url` has ``{host}`` and ``{port}`` placeholders."""
    prepare_container(container, port, owner, service)
    seconds = start_container(container, service)
    host = LOOPBACK if engine_is_local() else container.get_container_host_ip()
    host_port = int(container.get_exposed_port(port))
    endpoint = Endpoint(
        service=service,
        backend="docker",
        url=url.format(host=host, port=host_port),
        host=host,
        port=host_port,
        username=username,
        password=password,
        ready_seconds=seconds,
        origin=container.image,
        database=database,
    )
    return ContainerHandle(container, endpoint)


class DockerBackend:
    """Containers from the service's image, through testcontainers' own modules."""

    name = "docker"

    def available(self, spec: ServiceSpec) -> bool:
        return spec.start_docker is not None and engine_answers()

    def check(self, spec: ServiceSpec) -> str:
        if spec.start_docker is None:
            raise ServiceError(f"{spec.name} has no docker backend: set {spec.backend_env}=local")
        docker_client()
        return "" if image_present(spec.image) else f"; {spec.image} pulled on first use"

    def start(self, spec: ServiceSpec, owner: Owner) -> Handle:
        if spec.start_docker is None:
            raise ServiceError(f"{spec.name} has no docker backend: use {spec.backend_env}=local")
        docker_client()
        return spec.start_docker(spec.image, owner)
