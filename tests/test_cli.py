"""The workshop command line, run as a learner would run it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def labkit(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI; an empty value in `env` removes that variable."""
    merged = {k: v for k, v in {**os.environ, **env}.items() if v != ""}
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", *args],
        capture_output=True, text=True, timeout=180, check=False, env=merged, cwd=cwd,
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


def test_bad_service_url_is_reported_not_crashed(tmp_path):
    result = labkit("up", "redis", LABKIT_REDIS_URL="http://nope", LABKIT_BACKEND="external",
                    LABKIT_STATE_DIR=str(tmp_path))  # not a `labkit up` already running
    assert result.returncode != 0
    assert "must start with redis://" in result.stdout + result.stderr


def test_env_prints_export_lines_a_shell_can_eval():
    env = {"LABKIT_BACKEND": "external",
           "LABKIT_POSTGRES_URL": "postgresql://app:it%27s@db.example:6543/shop"}
    result = labkit("env", "postgres", **env)
    assert result.returncode == 0, result.stderr
    assert "export DATABASE_URL=postgresql://app:it%27s@db.example:6543/shop" in result.stdout
    shell = subprocess.run(
        ["bash", "-c", 'eval "$1"; echo "$PGHOST $PGPORT $PGPASSWORD $PGDATABASE"', "-",
         result.stdout], capture_output=True, text=True, check=True,
    )
    assert shell.stdout.split() == ["db.example", "6543", "it's", "shop"]


def test_env_says_to_run_up_when_nothing_outlives_it(tmp_path):
    result = labkit("env", "redis", LABKIT_STATE_DIR=str(tmp_path), LABKIT_BACKEND="local",
                    LABKIT_REDIS_URL="")
    assert result.returncode == 1
    assert "labkit up redis" in result.stderr and not result.stdout


@pytest.mark.slow
def test_up_status_env_down_cycle_stays_in_its_project(tmp_path):
    """No LABKIT_STATE_DIR: the session lives in the project's .labkit/, unseen elsewhere."""
    project, other = tmp_path / "project", tmp_path / "other"
    (project / "src").mkdir(parents=True)
    other.mkdir()
    for path in (project, other):
        (path / "pyproject.toml").write_text("")
    env = {"LABKIT_STATE_DIR": "", "LABKIT_BACKEND": "local", "LABKIT_REDIS_URL": ""}
    up = labkit("up", "redis", cwd=project, **env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "export LABKIT_REDIS_URL=redis://" in up.stdout
    up_json = project / ".labkit" / "up.json"
    assert stat.S_IMODE(up_json.stat().st_mode) == 0o600
    assert stat.S_IMODE(up_json.parent.stat().st_mode) == 0o700
    try:
        assert "labkit up session" in labkit("status", cwd=project / "src", **env).stdout
        exported = labkit("env", cwd=project / "src", **env)
        assert "export REDIS_URL=redis://" in exported.stdout, exported.stderr
        assert "no labkit up session" in labkit("status", cwd=other, **env).stdout
        assert labkit("env", "redis", cwd=other, **env).returncode == 1
    finally:
        down = labkit("down", cwd=project, **env)
    assert "stopped the labkit up session" in down.stdout
    assert "no labkit up session" in labkit("status", cwd=project, **env).stdout


HOLD_A_CONTAINER = """
from labkit import services
print(services.start("redis", "docker").endpoint.port, flush=True)
input()
"""


@pytest.mark.docker
@pytest.mark.slow
def test_down_all_removes_this_projects_containers_only(tmp_path):
    """CI's `labkit down --all` must not remove another checkout's (a developer's kernels')."""
    from labkit import services

    image = services.specs()["redis"].image
    unavailable = services.why_no_containers(image)
    if unavailable:
        pytest.skip(f"no containers here: {unavailable}")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    holders = {
        state: subprocess.Popen([sys.executable, "-c", HOLD_A_CONTAINER], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env={**os.environ, "LABKIT_STATE_DIR": str(state),
                                     "TESTCONTAINERS_RYUK_DISABLED": "true"})
        for state in (ours, theirs)
    }
    try:
        for holder in holders.values():
            lines = iter(holder.stdout.readline, "")
            assert any(line.strip().isdigit() for line in lines), "no container started"
        client = services.docker_client()

        def of(state: Path) -> list[str]:
            return [c.short_id for c in client.containers.list(
                all=True, filters={"label": [f"labkit.state={state}"]})]

        assert of(ours) and of(theirs)
        down = labkit("down", "--all", LABKIT_STATE_DIR=str(ours))
        assert down.returncode == 0, down.stdout + down.stderr
        assert not of(ours)
        assert of(theirs), "labkit down --all removed another project's container"
    finally:
        for holder in holders.values():
            holder.kill()
            holder.wait()
        labkit("down", "--all", LABKIT_STATE_DIR=str(theirs))


def test_shop_serve_passes_workers_and_access_log_to_the_shop(monkeypatch):
    """`labkit shop serve --workers 2 --no-access-log` reaches `labkit.shop.testing.serve`
    (whose two workers sharing a secret tests/shop/test_shop_runtime.py serves for real)."""
    from labkit import cli
    from labkit.shop import testing

    called: list[dict[str, object]] = []
    monkeypatch.setattr(testing, "serve", lambda **options: called.append(options))

    assert cli.main(["shop", "serve", "--port", "8123", "--workers", "2", "--no-access-log"]) == 0
    assert cli.main(["shop", "serve"]) == 0

    assert called == [
        {"host": "127.0.0.1", "port": 8123, "workers": 2, "access_log": False},
        {"host": "127.0.0.1", "port": 8000, "workers": 1, "access_log": True},
    ]
