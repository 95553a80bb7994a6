"""AWS (S3, SQS, …) as a live service: one emulator answers every AWS API.

    >>> from labkit import services
    >>> aws = services.get("aws")
    >>> aws.url, aws.extra["region"]
    ('http://127.0.0.1:38421', 'us-east-1')

Backends, as for the other services:

- local: moto's own server (``moto_server``, installed with ``moto[server]``), a
  private process started, owned and swept like local PostgreSQL;
- docker: the pinned ``motoserver/moto`` image (LABKIT_AWS_IMAGE overrides it). When
  Docker was only *chosen* by ``auto`` and the image is neither on the machine nor
  pullable (no registry reachable), aws runs on the local backend instead and says
  so; with LABKIT_AWS_BACKEND=docker the missing image is an error. CI on this
  machine runs aws locally: LABKIT_AWS_BACKEND=local;
- external: LABKIT_AWS_URL=http://127.0.0.1:4566 (LocalStack, a workshop's moto).

Credentials are the emulator's dummy ones; LABKIT_AWS_REGION, LABKIT_AWS_ACCESS_KEY
and LABKIT_AWS_SECRET_KEY change them for an external emulator that checks them.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

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
    prepare_container,
    quiet_testcontainers,
    start_container,
)
from labkit.services._local import LocalHandle, find_binary, launch, new_instance
from labkit.waiting import wait_until

DEFAULT_IMAGE = "motoserver/moto:5.0.28"
CONTAINER_PORT = 5000


def credentials() -> dict[str, str]:
    """Region and dummy credentials every client of the emulator uses."""
    return {
        "region": os.environ.get("LABKIT_AWS_REGION", "us-east-1"),
        "access_key": os.environ.get("LABKIT_AWS_ACCESS_KEY", "test"),
        "secret_key": os.environ.get("LABKIT_AWS_SECRET_KEY", "test"),
    }


def _probe(url: str) -> None:
    """Raises until the emulator answers HTTP (any status below 500 will do).

    The standard library's client, not httpx: the core install, which serves other
    projects' tests, has no HTTP client of its own.
    """
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise ConnectionError(f"{url} answered {exc.code}") from None


def moto_server() -> str | None:
    """moto's server beside this Python, else LABKIT_MOTO_SERVER or PATH."""
    # The venv's bin directory is often not on PATH (`.venv/bin/pytest` without activation).
    beside_python = Path(sys.executable).parent / "moto_server"
    if beside_python.exists():
        return str(beside_python)
    return find_binary("moto_server", "LABKIT_MOTO_SERVER")


def start_local(owner: Owner) -> LocalHandle:
    binary = moto_server()
    if binary is None:
        raise ServiceError(
            "local aws needs moto's server: pip install 'moto[server]' (it provides "
            "moto_server), or set LABKIT_AWS_URL=http://… to an emulator you run"
        )
    record = new_instance("aws", owner)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    executor, record, seconds = launch(
        record,
        [binary, "-H", LOOPBACK, "-p", str(port)],
        port,
        url,
        lambda: _probe(url),
        timeout=60,
        envvars={"HOME": record.workdir},
    )
    endpoint = Endpoint(
        service="aws",
        backend="local",
        url=url,
        host=LOOPBACK,
        port=port,
        ready_seconds=seconds,
        origin=binary,
        extra=credentials(),
    )
    return LocalHandle(executor, record, endpoint)


def start_docker(image: str, owner: Owner) -> Handle:
    with quiet_testcontainers():
        from testcontainers.core.container import DockerContainer

    container = DockerContainer(image)
    prepare_container(container, CONTAINER_PORT, owner, "aws")
    seconds = start_container(container, "aws")
    port = int(container.get_exposed_port(CONTAINER_PORT))
    url = f"http://{LOOPBACK}:{port}"

    def answers() -> bool:
        try:
            _probe(url)
        except OSError:  # refused, reset, timed out, or answered 5xx (ConnectionError)
            return False
        return True

    try:
        wait_until(answers, timeout=60, interval=0.1, message=f"aws container at {url}")
    except TimeoutError as exc:
        container.stop()
        raise ServiceError(
            f"{exc}: look at `docker logs`, or use LABKIT_AWS_BACKEND=local"
        ) from None
    endpoint = Endpoint(
        service="aws",
        backend="docker",
        url=url,
        host=LOOPBACK,
        port=port,
        ready_seconds=seconds,
        origin=image,
        extra=credentials(),
    )
    return ContainerHandle(container, endpoint)


def _environ(endpoint: Endpoint) -> dict[str, str]:
    """The variables boto3 and the AWS CLI read (AWS_ENDPOINT_URL since botocore 1.31)."""
    return {
        "AWS_ENDPOINT_URL": endpoint.url,
        "AWS_DEFAULT_REGION": endpoint.extra["region"],
        "AWS_ACCESS_KEY_ID": endpoint.extra["access_key"],
        "AWS_SECRET_ACCESS_KEY": endpoint.extra["secret_key"],
    }


SPEC = ServiceSpec(
    name="aws",
    schemes=("http", "https"),
    example_url="http://127.0.0.1:4566",
    default_port=80,
    default_image=DEFAULT_IMAGE,
    start_docker=start_docker,
    start_local=start_local,
    binaries=(Binary("moto_server", moto_server, "pip install 'moto[server]'"),),
    # ci/images/build makes no emulator image: moto's server from PyPI is the way, as in CI
    without_registry="LABKIT_AWS_BACKEND=local (moto's server: pip install 'moto[server]')",
    endpoint_extra=credentials,
    extra_environ=_environ,
)
