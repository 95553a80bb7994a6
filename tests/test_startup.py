"""labkit.startup: lesson 01's measurements, on the real PostgreSQL."""

from __future__ import annotations

import os
import socket
import time

import pytest

from labkit import services
from labkit.services import Endpoint
from labkit.startup import (
    fresh_postgres_start,
    median_seconds,
    skip_without_docker,
    watch_postgres_startup,
    watch_startup,
    with_env,
)


def address_of(postgres: Endpoint, **changes: object) -> dict[str, object]:
    return {"host": postgres.host, "port": postgres.port, "user": postgres.user,
            "password": postgres.password, "dbname": postgres.database, **changes}


def test_with_env_sets_removes_and_restores(monkeypatch):
    monkeypatch.setenv("LABKIT_TEST_KEPT", "before")
    monkeypatch.delenv("LABKIT_TEST_NEW", raising=False)
    with with_env(LABKIT_TEST_KEPT=None, LABKIT_TEST_NEW="inside"):
        assert "LABKIT_TEST_KEPT" not in os.environ
        assert os.environ["LABKIT_TEST_NEW"] == "inside"
    assert os.environ["LABKIT_TEST_KEPT"] == "before"
    assert "LABKIT_TEST_NEW" not in os.environ


def test_with_env_restores_after_an_error(monkeypatch):
    monkeypatch.setenv("LABKIT_TEST_KEPT", "before")
    with pytest.raises(RuntimeError), with_env(LABKIT_TEST_KEPT="inside"):
        raise RuntimeError("boom")
    assert os.environ["LABKIT_TEST_KEPT"] == "before"


def test_watch_startup_sees_a_ready_server_at_once(postgres):
    row = watch_startup(address_of(postgres), time.perf_counter(), deadline_s=10)
    assert 0 <= row["port open (s)"] <= row["ready (s)"] < 10
    assert row["refused queries"] == 0 and row["last refusal"] == ""


def test_watch_startup_times_out_where_nothing_listens(postgres):
    address = address_of(postgres, host=services.LOOPBACK, port=services.free_port())
    with pytest.raises(TimeoutError, match="port open: False"):
        watch_startup(address, time.perf_counter(), deadline_s=0.2)


def test_watch_startup_is_not_fooled_by_a_silent_port(postgres):
    with socket.create_server((services.LOOPBACK, 0)) as silent:  # accepts, never answers
        address = address_of(postgres, host=services.LOOPBACK, port=silent.getsockname()[1])
        with pytest.raises(TimeoutError, match="port open: True"):
            watch_startup(address, time.perf_counter(), deadline_s=0.2)


@pytest.mark.slow
def test_watch_postgres_startup_sees_the_port_open_before_the_server_answers():
    rows = watch_postgres_startup()
    if not rows:
        pytest.skip("no PostgreSQL binaries and no Docker engine with the postgres image")
    for row in rows:
        assert 0 < row["port open (s)"] <= row["ready (s)"]
        assert row["refused queries"] >= 0
    if services.postgres_bindir() is not None:
        assert [row["start"] for row in rows] == ["fresh", "after a crash"]


@pytest.mark.slow
def test_fresh_postgres_start_times_a_start_and_stops_it(postgres):
    measured = fresh_postgres_start()
    if measured is None:
        pytest.skip("no PostgreSQL can be started here")
    backend, seconds = measured
    assert backend in ("local", "docker") and seconds > 0


def test_median_seconds_is_the_middle_call():
    calls = iter([0.0, 0.0, 0.05])
    assert median_seconds(lambda: time.sleep(next(calls)), times=3) < 0.04
    with pytest.raises(ValueError, match="times >= 1"):
        median_seconds(lambda: None, times=0)


def test_skip_without_docker_skips_and_says_why():
    if services.engine_answers():
        pytest.skip("a Docker engine answers here: nothing to skip")
    with pytest.raises(pytest.skip.Exception, match="no Docker engine answers"):
        skip_without_docker(services.specs()["postgres"].image)
