"""Wait for an asynchronous effect with a deadline, instead of sleeping and hoping.

    >>> from labkit.waiting import wait_until
    >>> wait_until(lambda: queue_depth("email-queue") == 1, timeout=5, message="no email queued")

A fixed ``time.sleep(1)`` is both too long (every run pays it) and too short (a loaded
CI machine needs 1.2 s). Polling returns as soon as the effect is there, and a miss
fails with a message that says what was awaited and for how long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.05,
    message: str = "condition not met",
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    Raises TimeoutError after `timeout` seconds, naming `message` and the last value
    seen. The predicate is always called at least once, and once more at the deadline.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(f"need timeout >= 0 and interval > 0, got {timeout=} {interval=}")
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{message} within {timeout}s (last value: {result!r})")
        time.sleep(min(interval, remaining))
