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
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from labkit.services import docker, register
from labkit.services.base import Endpoint, Handle, Owner, ServiceError, ServiceSpec, free_port
from labkit.services.local import LOOPBACK, LocalHandle, _launch, _workdir, find_binary
from labkit.services.ownership import sweep_local
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
    """Raises until the emulator answers HTTP (any status below 500 will do)."""
    response = httpx.get(f"{url}/moto-api/", timeout=2)
    if response.status_code >= 500:
        raise ConnectionError(f"{url} answered {response.status_code}")


def moto_server() -> str | None:
    # The venv's bin directory is often not on PATH (`.venv/bin/pytest` without activation).
    beside_python = Path(sys.executable).parent / "moto_server"
    if beside_python.exists():
        return str(beside_python)
    return find_binary("moto_server", "LABKIT_MOTO_SERVER")


def start_local_aws(owner: Owner) -> LocalHandle:
    binary = moto_server()
    if binary is None:
        raise ServiceError(
            "local aws needs moto's server: pip install 'moto[server]' (it provides "
            "moto_server), or set LABKIT_AWS_URL=http://… to an emulator you run"
        )
    sweep_local()
    workdir = _workdir("aws")
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    executor, record, seconds = _launch(
        "aws",
        owner,
        workdir,
        [binary, "-H", LOOPBACK, "-p", str(port)],
        port,
        url,
        lambda: _probe(url),
        timeout=60,
        envvars={"HOME": str(workdir)},
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


def start_aws_container(image: str, owner: Owner) -> Handle:
    container = docker.DockerContainer(image)
    docker._prepare(container, CONTAINER_PORT, owner, "aws")
    seconds = docker._start(container, "aws")
    port = int(container.get_exposed_port(CONTAINER_PORT))
    url = f"http://{LOOPBACK}:{port}"

    def answers() -> bool:
        try:
            _probe(url)
        except (httpx.HTTPError, ConnectionError):
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
    return docker.ContainerHandle(container, endpoint)


def endpoint_from_aws_url(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceError(
            f"LABKIT_AWS_URL must be an emulator's http(s) URL, got {url!r} — "
            "e.g. LABKIT_AWS_URL=http://127.0.0.1:4566"
        )
    return Endpoint(
        service="aws",
        backend="external",
        url=url.rstrip("/"),
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 80),
        origin="environment",
        extra=credentials(),
    )


register(
    ServiceSpec(
        name="aws",
        default_image=DEFAULT_IMAGE,
        start_docker=start_aws_container,
        start_local=start_local_aws,
        from_url=endpoint_from_aws_url,
        default_port=CONTAINER_PORT,
    )
)
