"""labkit.load against a live uvicorn subprocess serving labkit.load_demo."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import tempfile
import threading
import warnings

import httpx
import numpy as np
import pandas as pd
import pytest

from labkit import load

STALL_S = 1.0


@pytest.fixture(scope="module")
def app():
    with load.serve_app("labkit.load_demo:app") as server:
        yield server


@pytest.fixture(autouse=True)
def quiet_generator_warnings():
    # This machine is small: whether the generator is CPU-bound is the benchmark's
    # question, not these tests'.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.GeneratorBottleneckWarning)
        yield


def test_closed_loop_records_one_row_per_request(app):
    run = load.closed_loop(app.url, "/ping", workers=5, requests=200, app_pid=app.pid)

    assert len(run) == 200
    assert list(run.columns) == load.COLUMNS
    assert (run["status"] == 200).all() and run["ok"].all()
    assert (run["latency_ms"] > 0).all()
    assert (run["queue_ms"] == 0).all()
    assert run.attrs["cpu"].app_cores is not None


def test_path_can_vary_per_request(app):
    run = load.closed_loop(app.url, lambda i: "/ping" if i % 2 else "/missing", workers=2,
                           requests=40)

    assert sorted(run["status"].unique()) == [200, 404]
    assert run["ok"].sum() == 20
    assert (run.loc[~run["ok"], "error"] == "HTTP 404").all()


def test_open_loop_keeps_to_its_schedule(app):
    run = load.open_loop(app.url, "/ping", rate=50, duration_s=1.0)

    assert len(run) == 50
    np.testing.assert_allclose(run["start_s"], np.arange(50) / 50)


def test_open_loop_reports_a_stall_that_closed_loop_hides(app):
    """The server freezes for a second in both runs; only the open loop's figures say so.

    A closed loop's workers wait out the freeze with the server, so at most one request
    per worker measures it. The open loop keeps its schedule: every request due during
    the freeze waits, and its latency counts from when it was due.
    """
    workers, rate = 4, 100

    httpx.post(f"{app.url}/stall", params={"after_requests": 50, "for_s": STALL_S})
    closed = load.closed_loop(app.url, "/ping", workers=workers, duration_s=3)
    httpx.post(f"{app.url}/stall", params={"after_requests": 50, "for_s": STALL_S})
    opened = load.open_loop(app.url, "/ping", rate=rate, duration_s=3)

    slow = STALL_S * 1000 / 2
    closed_saw, open_saw = (closed["latency_ms"] > slow).sum(), (opened["latency_ms"] > slow).sum()
    assert 1 <= closed_saw <= workers, "each closed-loop worker can be caught by the freeze once"
    # Requests due in the first half of the freeze wait more than half of it.
    assert open_saw >= 0.8 * rate * STALL_S / 2
    assert load.summary(opened)["p99_ms"] > slow
    assert load.summary(closed)["p99_ms"] < slow, (
        "the closed loop's p99 shows the stall: it made too few requests for its "
        f"{workers} stalled ones to be under 1% ({len(closed)} requests)"
    )


def test_slo_fails_for_the_injected_slowdown_and_passes_without_it(app):
    # 200 requests: the baseline fails only if 3 of them take over 500 ms to /ping, which
    # takes a badly overloaded machine; the slowed run misses by construction.
    added_ms = 1000
    objectives = {"success_rate": 0.99, "p99_ms": added_ms / 2}
    baseline = load.open_loop(app.url, "/ping", rate=100, duration_s=2.0, max_in_flight=20)
    load.assert_slo(baseline, **objectives)

    httpx.post(f"{app.url}/slowdown", params={"ms": added_ms})
    try:
        slowed = load.open_loop(app.url, "/ping", rate=100, duration_s=2.0)
    finally:
        httpx.post(f"{app.url}/slowdown", params={"ms": 0})

    with pytest.raises(load.SLOViolation) as failure:
        load.assert_slo(slowed, **objectives)
    message = str(failure.value)
    assert "SLO NOT MET by 200 requests" in message
    assert "✗ p99 latency" in message and "200 requests over 500 ms" in message
    assert "✓ success rate" in message


def test_failures_are_named_in_the_slo_report(app):
    run = load.closed_loop(app.url, "/missing", workers=2, requests=10)

    met, report = load.slo_report(run, success_rate=0.99)

    assert not met
    assert "✗ success rate" in report and "10× HTTP 404" in report


def test_a_refused_connection_is_a_failed_request_not_a_crash():
    with socket.socket() as sock:  # a port just freed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = load.closed_loop(f"http://127.0.0.1:{port}", "/", workers=1, requests=3)

    assert len(run) == 3
    assert (run["status"] == 0).all()
    assert run["error"].str.startswith("ConnectionRefusedError").all()


class _OnePerConnection(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0 as the standard library serves it: no length, the body ends at close."""

    def do_GET(self):
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()
        self.wfile.write(b"pong")

    def log_message(self, *args):
        pass


@pytest.fixture
def http10_server():
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OnePerConnection) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


def test_a_server_that_closes_after_each_response_is_read_to_the_end(http10_server):
    run = load.closed_loop(http10_server, lambda i: "/ok" if i % 3 else "/down", workers=2,
                           requests=30, method="GET")

    assert len(run) == 30
    assert (run["status"] == 200).sum() == 20 and (run["status"] == 503).sum() == 10
    assert (run.loc[~run["ok"], "error"] == "HTTP 503").all()


def test_head_responses_have_no_body_whatever_they_announce(app):
    # FastAPI routes /ping for GET only: uvicorn answers 405 with the length of its JSON
    # error announced, no body, and the connection kept open for the next request.
    run = load.closed_loop(app.url, "/ping", workers=1, requests=5, method="HEAD",
                           timeout_s=2)

    assert (run["status"] == 405).all(), run["error"].unique()


def test_sweep_finds_where_throughput_stops_growing(app):
    # Each request holds the app's only event loop for 5 ms, so from 2 workers on they
    # queue: throughput stays flat while latency grows with the queue.
    result = load.sweep(app.url, "/work?cpu_ms=5", workers=[1, 2, 8], duration_s=1.0)

    assert list(result.index) == [1, 2, 8]
    assert result.loc[8, "p50_ms"] > 2 * result.loc[1, "p50_ms"]
    knee = load.find_knee(result)
    assert knee in result.index
    assert result.loc[knee, "throughput_rps"] >= 0.9 * result["throughput_rps"].max()


def test_summary_percentiles_are_exact():
    run = pd.DataFrame({"start_s": np.linspace(0, 9.999, 1000),
                        "latency_ms": np.arange(1, 1001, dtype=float),
                        "queue_ms": 0.0, "status": 200, "error": None, "ok": True})

    stats = load.summary(run)

    assert stats["p50_ms"] == 500 and stats["p99_ms"] == 990 and stats["p99.9_ms"] == 999
    assert stats["max_ms"] == 1000 and stats["mean_ms"] == 500.5
    assert stats["throughput_rps"] == pytest.approx(1000 / 10.999, rel=1e-3)


def test_timeline_shows_a_stall_as_zero_throughput():
    run = pd.DataFrame([(0.0, 10, 0, 200, None, True), (0.1, 2000, 0, 200, None, True),
                        (2.5, 10, 0, 500, "HTTP 500", False)], columns=load.COLUMNS)

    line = load.timeline(run, bucket_s=0.5)

    assert list(line.index) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert list(line["rps"]) == [2.0, 0.0, 0.0, 0.0, 2.0, 0.0]
    assert line.loc[2.5, "error_rps"] == 2.0


@pytest.mark.parametrize(
    ("report", "blamed"),
    [
        (load.CpuReport(0.95, 0.40, 0.70, 2), True),   # one Python process at its ceiling
        (load.CpuReport(0.60, 0.30, 0.95, 2), True),   # machine full, generator the bigger user
        (load.CpuReport(0.30, 0.95, 0.70, 2), False),  # the app is the busy one
    ],
)
def test_generator_is_blamed_only_when_it_is_the_busy_one(report, blamed):
    assert (report.bottleneck() is not None) is blamed


def test_a_url_without_scheme_is_refused_before_any_request():
    with pytest.raises(ValueError, match="expected a base URL like http://"):
        load.closed_loop("127.0.0.1:8000", "/", workers=2, requests=1)


def test_importing_the_package_leaves_pandas_and_httpx_for_when_they_are_used():
    # A fresh interpreter: this one has imported both already.
    code = "import sys, labkit.load; print(sorted({'pandas', 'httpx'} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert imported == "[]"


def test_a_broken_app_fails_fast_with_its_log():
    broken = load.serve_app("labkit.no_such_module:app", timeout_s=20)
    with pytest.raises(load.LoadError, match="exited with code") as failure, broken:
        pass
    assert "no_such_module" in str(failure.value)


@pytest.mark.slow
def test_locust_runs_headless_into_the_same_shapes_and_leaves_no_folder(
    app, tmp_path, monkeypatch
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = load.run_locust(app.url, "/ping", users=4, duration_s=3, app_pid=app.pid)

    assert list(result.requests.columns) == load.COLUMNS
    assert len(result.requests) >= 1  # how many depends on the machine's load: shapes count here
    assert (result.requests["status"] == 200).all()
    assert {"rps", "p50_ms", "p99_ms", "users"} <= set(result.history.columns)
    assert (result.history["rps"] > 0).all()
    # Locust's CSVs are snapshots taken each second; its per-request log is complete.
    assert 0 < result.stats["Request Count"].iloc[-1] <= len(result.requests)
    assert "Aggregated" in result.output
    assert result.cpu.generator_cores > 0
    assert str(tmp_path / "labkit-locust-") in " ".join(result.command), "wrote elsewhere"
    assert list(tmp_path.iterdir()) == [], "the CSV folder outlived the run"
