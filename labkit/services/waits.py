"""Wait strategies for testcontainers: ready when the test's own path answers.

    >>> from labkit.services.waits import QueryWaitStrategy
    >>> container.waiting_for(QueryWaitStrategy(first_query, psycopg.OperationalError))

testcontainers' strategies look at a port or a log line; a test needs a server that
answers its query, over the published port, with its credentials. `QueryWaitStrategy`
waits for exactly that. `LogCountWaitStrategy` counts a log line across stdout and stderr
together (testcontainers 4's `LogMessageWaitStrategy` matches each stream on its own and
returns at the first match, whatever its `times`). Both take testcontainers' fluent
settings, `with_poll_interval` and `with_startup_timeout`, and say what they waited for
when the deadline passes. This module imports testcontainers: import it where containers
are started, not from ``labkit.services``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from testcontainers.core.waiting_utils import WaitStrategy


class QueryWaitStrategy(WaitStrategy):
    """Ready when ``query(container)`` returns; `retry_on` errors mean "not yet"."""

    def __init__(self, query: Callable[[Any], object], *retry_on: type[Exception]) -> None:
        super().__init__()
        self.query = query
        self.retry_on: tuple[type[Exception], ...] = retry_on or (Exception,)

    def wait_until_ready(self, container: Any) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                self.query(container)
                return
            except self.retry_on as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no answer to {getattr(self.query, '__name__', 'the query')} within "
                        f"{self._startup_timeout:g}s; last error: {exc}"
                    ) from exc
            time.sleep(self._poll_interval)


class LogCountWaitStrategy(WaitStrategy):
    """Ready when `line` has appeared `times` times in the log, stdout and stderr together."""

    def __init__(self, line: str, times: int = 1) -> None:
        super().__init__()
        self.line, self.times = line, times

    def seen(self, container: Any) -> int:
        """How many times the line has been logged so far."""
        return b"".join(container.get_logs()).decode(errors="replace").count(self.line)

    def wait_until_ready(self, container: Any) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while (seen := self.seen(container)) < self.times:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.line!r} logged {seen} of {self.times} times within "
                    f"{self._startup_timeout:g}s"
                )
            time.sleep(self._poll_interval)
