"""One keep-alive HTTP/1.1 connection per sender of a run."""

from __future__ import annotations

import contextlib
import socket
import ssl
import urllib.parse
from collections.abc import Mapping

import httptools


class Connection:
    """One keep-alive HTTP/1.1 connection per sender: a socket and httptools' parser.

    Not http.client: profiled against a trivial endpoint (py-spy --gil), http.client
    spent ~60% of the sender's GIL time parsing response headers with the email package
    and ~13% assembling the request, which made the generator, not the app, the limit.
    Here a request is bytes built once per path, and the response goes through llhttp
    (httptools, the parser uvicorn serves with) with no Python call per header: two
    callbacks per response, when its headers and when its body are complete.
    """

    def __init__(
        self, url: str, headers: Mapping[str, str], timeout_s: float, tls: ssl.SSLContext
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:  # the runner refuses such a URL before any sender starts
            raise ValueError(f"expected a base URL like http://127.0.0.1:8000, got {url!r}")
        self.host = parts.hostname
        self.tls = tls if parts.scheme == "https" else None
        self.port = parts.port or (443 if self.tls else 80)
        self.timeout_s = timeout_s
        self.prefix = parts.path.rstrip("/")
        host_header = parts.netloc.rpartition("@")[2]
        self.head = "".join(
            f"{name}: {value}\r\n" for name, value in
            {"Host": host_header, "User-Agent": "labkit", **headers}.items()
        ) + "\r\n"
        self.requests: dict[tuple[str, str], bytes] = {}  # the bytes of each request sent
        self.socket: socket.socket | None = None
        self.used = False  # whether the open socket has carried a response already
        self.parser = httptools.HttpResponseParser(self)
        self.complete = False
        self.status = 0
        self.keep_alive = True
        self.head_only = False  # HEAD: a response without a body, whatever it announces

    def open(self) -> None:
        """Connect now, before the run's clock starts: a run measures requests, not its
        senders' handshakes all at once. A failure here is left for the first request
        to meet again and record."""
        with contextlib.suppress(OSError):
            self._connect()

    def send(self, method: str, path: str) -> tuple[int, str | None]:
        """Send one request and read its whole response: (status, error or None)."""
        try:
            status = self._exchange(method, path)
        except (OSError, httptools.HttpParserError) as exc:
            self.close()
            return 0, f"{type(exc).__name__}: {exc}"[:200]
        return status, None if status < 400 else f"HTTP {status}"

    # httptools calls these two while parsing.
    def on_headers_complete(self) -> None:
        # Read here: once the message is complete, llhttp forgets its keep-alive flags.
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.head_only:
            self.complete = True

    def on_message_complete(self) -> None:
        self.complete = True

    def _exchange(self, method: str, path: str) -> int:
        request = self.requests.get((method, path))
        if request is None:
            request = f"{method} {self.prefix}{path} HTTP/1.1\r\n{self.head}".encode("latin-1")
            if len(self.requests) < 1024:  # a path per request (user ids…) is not kept
                self.requests[method, path] = request
        self.head_only = method == "HEAD"
        try:
            return self._once(request)
        except (ConnectionResetError, BrokenPipeError, _ClosedBeforeResponse):
            if not self.used:
                raise
            # The server closed an idle keep-alive connection; any client retries that once.
            self.close()
            return self._once(request)

    def _once(self, request: bytes) -> int:
        sock = self.socket or self._connect()
        sock.sendall(request)
        self.complete, self.status, received = False, 0, False
        while not self.complete:
            data = sock.recv(65536)
            if not data:
                if not received:
                    raise _ClosedBeforeResponse("the server closed the connection before "
                                                "answering")
                if not self.status:
                    raise ConnectionError("the server closed the connection in the middle "
                                          "of its response's headers")
                # A response whose body ends where the connection does; or a cut one.
                self.keep_alive = False
                break
            received = True
            self.parser.feed_data(data)
        if not self.keep_alive:
            self.close()
        elif self.head_only:  # its parser stopped mid-message, waiting for a body
            self.parser = httptools.HttpResponseParser(self)
        self.used = self.socket is not None
        return self.status

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        self.socket = sock
        self.parser = httptools.HttpResponseParser(self)
        self.used = False
        return sock

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None


class _ClosedBeforeResponse(ConnectionError):
    """The connection ended before any byte of the response came."""
