"""The one event loop every proxy of this process runs on, in a thread of its own.

Tests and notebook cells are synchronous code: they call a client, the client blocks on a
socket, and the proxy in between must keep forwarding meanwhile. So the proxies live on
an asyncio loop in a background thread, and the synchronous API hands each change to that
loop and waits for it to be done: when ``outage()`` returns, the listener is closed.

The thread starts with the first proxy and stops with the last one, so a process that
closed its proxies has no thread left behind.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

THREAD_NAME = "labkit-faults"
CALL_TIMEOUT_S = 30.0  # a change on the loop takes microseconds; this only catches a hang

_LOCK = threading.Lock()
_LOOP: asyncio.AbstractEventLoop | None = None
_THREAD: threading.Thread | None = None
_USERS = 0


def acquire() -> asyncio.AbstractEventLoop:
    """The running loop, started if this is its first user; pair with `release`."""
    global _LOOP, _THREAD, _USERS
    with _LOCK:
        if _LOOP is None:
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()
                loop.close()

            thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
            thread.start()
            started.wait()
            _LOOP, _THREAD = loop, thread
        _USERS += 1
        return _LOOP


def release() -> None:
    """One user fewer; the last one stops the loop and joins its thread."""
    global _LOOP, _THREAD, _USERS
    with _LOCK:
        _USERS -= 1
        if _USERS > 0 or _LOOP is None:
            return
        loop, thread = _LOOP, _THREAD
        _LOOP = _THREAD = None
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=CALL_TIMEOUT_S)


def call(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on the proxies' loop and return its result (from another thread)."""
    if _THREAD is threading.current_thread():
        coroutine.close()
        raise RuntimeError(
            "labkit.faults was called from its own event loop thread: call it from a test, "
            "a cell or another thread, not from a proxy's callback"
        )
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=CALL_TIMEOUT_S)
