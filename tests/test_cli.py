"""The workshop command line, run as a learner would run it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def labkit(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", *args],
        capture_output=True, text=True, timeout=180, check=False, env={**os.environ, **env},
    )


def test_doctor_explains_a_missing_docker_engine_with_the_fix(tmp_path):
    result = labkit("doctor", DOCKER_HOST=f"unix://{tmp_path}/no-such.sock")
    assert "docker engine" in result.stdout
    assert "not reachable" in result.stdout
    assert "fix: start Docker" in result.stdout and "LABKIT_BACKEND=local" in result.stdout


def test_doctor_fails_when_a_service_has_no_backend(tmp_path):
    result = labkit(
        "doctor",
        DOCKER_HOST=f"unix://{tmp_path}/no-such.sock",
        LABKIT_BACKEND="docker",
    )
    assert result.returncode == 1
    assert "labkit cannot run" in result.stdout


def test_bad_service_url_is_reported_not_crashed():
    result = labkit("up", "redis", LABKIT_REDIS_URL="http://nope", LABKIT_BACKEND="external")
    assert result.returncode != 0
    assert "must start with redis://" in result.stdout + result.stderr


@pytest.mark.slow
def test_up_status_down_cycle(tmp_path):
    env = {"LABKIT_STATE_DIR": str(tmp_path), "LABKIT_BACKEND": "local"}
    up = labkit("up", "redis", **env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "export LABKIT_REDIS_URL=redis://" in up.stdout

    status = labkit("status", **env)
    assert "labkit up session" in status.stdout

    down = labkit("down", **env)
    assert "stopped the labkit up session" in down.stdout
    assert "no labkit up session" in labkit("status", **env).stdout
