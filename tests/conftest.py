"""Shared helpers for labkit's own tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from labkit import services
from labkit.services import Endpoint

RunNbmake = Callable[..., "subprocess.CompletedProcess[str]"]
# Installed pytest plugins a child nbmake run never uses, seconds to import in each child
# (Schemathesis alone ~2.7 s): the same ones labkit.notebook.setup() keeps out of kernels.
SLOW_UNUSED_PLUGINS = ("-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:faker",
                       "-p", "no:locust", "-p", "no:xdist", "-p", "no:xdist.looponfail")


@pytest.fixture
def run_nbmake(postgres: Endpoint, redis: Endpoint, rabbitmq: Endpoint) -> RunNbmake:
    """Run a notebook under nbmake in a child process, as CI does; returns the result.

    The child uses this process's services, passed as external URLs: a second
    PostgreSQL and RabbitMQ started for each run would cost more than the run itself.
    `solutions` is LABKIT_SOLUTIONS: "run" as in CI, "hide" as for a learner.
    """
    urls = {}
    for endpoint in (postgres, redis, rabbitmq):
        spec = services.specs()[endpoint.service]
        urls[spec.backend_env] = "external"
        urls[spec.url_env] = endpoint.url

    def run(path: Path, solutions: str = "run") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "--nbmake", "-q", "-p", "no:cacheprovider",
             *SLOW_UNUSED_PLUGINS, str(path)],
            check=False,  # the exit code is what the tests look at
            capture_output=True,
            text=True,
            env={**os.environ, **urls, "LABKIT_SOLUTIONS": solutions},
            cwd=path.parent,
            timeout=300,
        )

    return run
