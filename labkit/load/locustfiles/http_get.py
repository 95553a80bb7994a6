"""A Locust user that GETs paths back to back — labkit's closed loop, at Locust's scale.

Run by ``labkit.load.run_locust`` (never imported into a notebook kernel: Locust patches
the standard library with gevent on import). Configured by options that Locust's master
sends on to its workers, so a worker on another machine needs only this file and the
master's address (``locust -f http_get.py --worker --master-host <master>``). Each
option can also come from the environment, which is how ``run_locust`` sets them:

- ``--labkit-paths`` / ``LABKIT_LOCUST_PATHS``: JSON list of paths; each user cycles
  through them.
- ``--labkit-headers`` / ``LABKIT_LOCUST_HEADERS``: JSON object of headers, e.g. an
  Authorization bearer.
- ``--labkit-log`` / ``LABKIT_LOCUST_LOG``: if set, every request becomes a row of
  ``<value>.<pid>.csv`` (start epoch seconds, latency ms, status, error), so labkit can
  read one row per request, as from its own runs. A worker does not write it: its rows
  ride to the master on the stats reports the worker sends anyway (every few seconds),
  and the master writes them — with workers on one machine (``--processes``) or many.
  As the run ends, the master asks each worker for a last report and waits for it, so
  the rows and Locust's own totals count the same, complete, set of requests.
"""

from __future__ import annotations

import atexit
import csv
import itertools
import json
import os
import time
from typing import TYPE_CHECKING, Any, TextIO

import gevent
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

if TYPE_CHECKING:
    from _csv import Writer  # what csv.writer returns; the csv module does not name it

ROWS = "labkit_requests"  # the key of a worker's rows in its stats report
FLUSH, FLUSHED = "labkit_flush", "labkit_flushed"  # the master's last call, and the answer
FLUSH_MARGIN_S = 30.0  # past --stop-timeout, for a worker on a loaded machine to answer


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--labkit-paths", env_var="LABKIT_LOCUST_PATHS", default='["/"]',
                        include_in_web_ui=False, help="JSON list of paths to GET in turn")
    parser.add_argument("--labkit-headers", env_var="LABKIT_LOCUST_HEADERS", default="{}",
                        include_in_web_ui=False, help="JSON object of request headers")
    parser.add_argument("--labkit-log", env_var="LABKIT_LOCUST_LOG", default="",
                        include_in_web_ui=False, help="write one row per request to <this>.<pid>.csv")


class PathUser(FastHttpUser):
    wait_time = constant(0)  # no think time: the next request leaves when the last answers

    def on_start(self) -> None:
        options = self.environment.parsed_options
        paths: list[str] = json.loads(options.labkit_paths)
        self.paths = itertools.cycle(paths)
        self.headers: dict[str, str] = json.loads(options.labkit_headers)
        self.name = paths[0] if len(paths) == 1 else f"{len(paths)} paths"

    @task
    def get(self) -> None:
        self.client.get(next(self.paths), headers=self.headers, name=self.name)


class _RequestLog:
    """This process's file of rows, opened on the first one."""

    def __init__(self) -> None:
        self.file: TextIO | None = None
        self.writer: Writer | None = None

    def write(self, prefix: str, rows: list[tuple[str, str, int, str]]) -> None:
        if self.writer is None:
            file = open(f"{prefix}.{os.getpid()}.csv", "w", newline="")  # noqa: SIM115
            self.file, self.writer = file, csv.writer(file)
            atexit.register(file.close)
        self.writer.writerows(rows)

    def flush(self) -> None:
        if self.file:
            self.file.flush()


_log = _RequestLog()
_unsent: list[tuple[str, str, int, str]] = []  # a worker's rows since its last report


@events.init.add_listener
def _route_rows(environment: Environment, **_kwargs: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        @environment.events.report_to_master.add_listener
        def _send_rows(client_id: str, data: dict[str, Any]) -> None:
            data[ROWS] = _unsent[:]
            del _unsent[:]

        def _flush(environment: Environment, **_kwargs: Any) -> None:
            runner.stop()  # each user finishes its request (up to --stop-timeout) and ends
            # A stats report now, with the last rows: the one a worker sends as it quits
            # can come after the master stopped listening (it waits 0.5 s), and then
            # those requests are missing from Locust's totals and from the rows alike.
            runner._send_stats()
            runner.send_message(FLUSHED)

        runner.register_message(FLUSH, _flush, concurrent=True)
    elif isinstance(runner, MasterRunner):
        flushed: set[str] = set()
        runner.register_message(FLUSHED, lambda msg, **_kwargs: flushed.add(msg.node_id))

        @environment.events.worker_report.add_listener
        def _receive_rows(client_id: str, data: dict[str, Any]) -> None:
            options, rows = environment.parsed_options, data.get(ROWS)
            if rows and options and options.labkit_log:
                _log.write(options.labkit_log, rows)

        @environment.events.test_stop.add_listener
        def _last_reports(**_kwargs: Any) -> None:
            """Before the master quits: every worker's last requests, in its stats and rows."""
            workers = {worker.id for worker in runner.clients.all}
            for worker in workers:
                runner.send_message(FLUSH, client_id=worker)
            deadline = time.monotonic() + environment.stop_timeout + FLUSH_MARGIN_S
            while not workers <= flushed and time.monotonic() < deadline:
                gevent.sleep(0.05)

    @environment.events.request.add_listener
    def _row(start_time: float, response_time: float, response: Any, exception: Any,
             **_kwargs: Any) -> None:
        prefix = environment.parsed_options and environment.parsed_options.labkit_log
        if not prefix:
            return
        row = (f"{start_time:.6f}", f"{response_time:.3f}",
               getattr(response, "status_code", 0) or 0, repr(exception) if exception else "")
        if isinstance(runner, WorkerRunner):
            _unsent.append(row)
        else:
            _log.write(prefix, [row])

    @environment.events.quitting.add_listener
    def _close(**_kwargs: Any) -> None:
        _log.flush()
