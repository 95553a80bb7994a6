"""A Locust user that GETs paths back to back — labkit's closed loop, at Locust's scale.

Run by ``labkit.load.run_locust`` (never imported into a notebook kernel: Locust patches
the standard library with gevent on import). Configured by environment, because the
same file also runs on remote workers in distributed mode:

- ``LABKIT_LOCUST_PATHS``: JSON list of paths; each user cycles through them.
- ``LABKIT_LOCUST_HEADERS``: JSON object of headers, e.g. an Authorization bearer.
- ``LABKIT_LOCUST_LOG``: if set, every request is appended to ``<value>.<pid>.csv``
  (start epoch seconds, latency ms, status, error), so labkit can read one row per
  request, as from its own runs. One file per process, as ``--processes`` forks.
"""

from __future__ import annotations

import atexit
import csv
import itertools
import json
import os
from typing import TYPE_CHECKING, TextIO

from locust import FastHttpUser, constant, events, task

PATHS: list[str] = json.loads(os.environ.get("LABKIT_LOCUST_PATHS", '["/"]'))
HEADERS: dict[str, str] = json.loads(os.environ.get("LABKIT_LOCUST_HEADERS", "{}"))
LOG_PREFIX = os.environ.get("LABKIT_LOCUST_LOG")
if TYPE_CHECKING:
    from _csv import Writer  # what csv.writer returns; the csv module does not name it

NAME = PATHS[0] if len(PATHS) == 1 else f"{len(PATHS)} paths"


class PathUser(FastHttpUser):
    wait_time = constant(0)  # no think time: the next request leaves when the last answers

    def on_start(self) -> None:
        self.paths = itertools.cycle(PATHS)

    @task
    def get(self) -> None:
        self.client.get(next(self.paths), headers=HEADERS, name=NAME)


class _RequestLog:
    """Opened lazily, so each forked process writes its own file."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pid: int | None = None
        self.file: TextIO | None = None
        self.writer: Writer | None = None

    def write(self, start_time: float, response_time: float, status: int, error: str) -> None:
        if self.pid != os.getpid():
            self.pid = os.getpid()
            file = open(f"{self.prefix}.{self.pid}.csv", "w", newline="")  # noqa: SIM115
            self.file, self.writer = file, csv.writer(file)
            atexit.register(file.close)
        assert self.writer is not None  # opened above, in this process
        self.writer.writerow((f"{start_time:.6f}", f"{response_time:.3f}", status, error))


if LOG_PREFIX:
    _log = _RequestLog(LOG_PREFIX)

    @events.request.add_listener
    def _log_request(start_time, response_time, response, exception, **_kwargs) -> None:
        status = getattr(response, "status_code", 0) or 0
        _log.write(start_time, response_time, status, repr(exception) if exception else "")

    @events.quitting.add_listener
    def _flush(**_kwargs) -> None:
        if _log.file:
            _log.file.flush()
