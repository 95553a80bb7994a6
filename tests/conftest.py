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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the long items first: every lesson's kernel (nbmake's and the learner's run in
    test_exercise_checks), the tests that run a notebook under nbmake (`run_nbmake`) and
    the tests marked slow, then the many short ones.

    pytest-xdist hands items to its workers in this order, so the short tests fill the
    end of the run on both workers, instead of one worker finishing a two-minute lesson
    while the other waits (the sort is stable: each group keeps its collection order)."""
    def long_first(item: pytest.Item) -> int:
        if item.path.suffix == ".ipynb" or item.name.startswith("test_a_learners_run"):
            return 0  # a whole lesson: 10 s to 2 minutes
        if "run_nbmake" in getattr(item, "fixturenames", ()) or item.get_closest_marker("slow"):
            return 1
        return 2

    items.sort(key=long_first)
