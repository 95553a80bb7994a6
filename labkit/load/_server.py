"""The app under load, served by uvicorn in a child process of its own."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.load._errors import LoadError


@dataclass
class AppServer:
    """An ASGI app served by uvicorn in a child process."""

    app: str
    url: str
    process: subprocess.Popen
    log_path: Path
    access_log: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def access_count(self, status: int | None = None) -> int:
        """Requests the server logged as answered (with `status`, if given) so far.

        Needs ``start_app(..., access_log=True)``: otherwise uvicorn logs none.
        """
        if not self.access_log:
            raise LoadError(
                f"{self.app!r} was served without its access log, so it counted no "
                "requests: start it with start_app(..., access_log=True)")
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        # uvicorn's access line: 127.0.0.1:50000 - "GET /path HTTP/1.1" 200 OK
        statuses = re.findall(r'"[A-Z]+ \S+ HTTP/[\d.]+" (\d{3})', text)
        return sum(1 for found in statuses if status is None or int(found) == status)

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self.log_path.unlink(missing_ok=True)


def start_app(
    app: str = "labkit.load_demo:app",
    *,
    env: Mapping[str, str] | None = None,
    factory: bool = False,
    workers: int = 1,
    ready_path: str = "/",
    timeout_s: float = 30.0,
    access_log: bool = False,
) -> AppServer:
    """Serve `app` ("module:attribute") with uvicorn in its own process on 127.0.0.1.

    The app runs outside the notebook kernel and the test process, as in production:
    the load generator cannot borrow its event loop, and a stall in the app cannot
    freeze the generator. Returns once `ready_path` answers (any status below 500).
    With `factory`, the attribute is a function that builds the app (uvicorn
    --factory), typically from settings passed in `env`. With `access_log`, uvicorn logs
    every request it answers (``AppServer.access_count``: the server's own count, to
    hold a load generator's to). Call ``stop()`` when done —
    or use ``serve_app``; it is stopped at interpreter exit in any case.
    """
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="labkit-uvicorn-", suffix=".log")[1])
    command = [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
        *(["--log-level", "info", "--access-log"] if access_log
          else ["--log-level", "warning", "--no-access-log"]),
        *(["--factory"] if factory else []),
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
    server = AppServer(app, f"http://127.0.0.1:{port}", process, log, access_log)
    atexit.register(server.stop)
    _wait_until_serving(server, ready_path, timeout_s)
    return server


@contextlib.contextmanager
def serve_app(app: str = "labkit.load_demo:app", **options: Any) -> Iterator[AppServer]:
    """``start_app`` as a context manager: the server stops when the block ends."""
    server = start_app(app, **options)
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(server: AppServer, path: str, timeout_s: float) -> None:
    import httpx  # here: only waiting for the app needs it, not ``import labkit.load``

    deadline = time.monotonic() + timeout_s
    last_problem = "no answer yet"
    with httpx.Client(base_url=server.url, timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                log = server.log_tail()
                server.stop()
                raise LoadError(
                    f"uvicorn serving {server.app!r} exited with code "
                    f"{server.process.returncode} before answering. Its log:\n"
                    f"{log}\nCheck that the import string is 'module:attribute' "
                    "and that the module imports without error."
                )
            try:
                if client.get(path).status_code < 500:
                    return
                last_problem = "it answered with a server error"
            except httpx.HTTPError as exc:
                last_problem = f"{type(exc).__name__}"
            time.sleep(0.05)
    log = server.log_tail()
    server.stop()
    raise LoadError(
        f"{server.app!r} did not answer GET {path} at {server.url} within {timeout_s:.0f}s "
        f"({last_problem}). Its log:\n{log}\n"
        "Raise timeout_s if the app is slow to start, or pass a ready_path it serves."
    )
