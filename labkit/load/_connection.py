"""One keep-alive HTTP connection per sender of a run."""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from collections.abc import Mapping


class Connection:
    """One keep-alive HTTP connection per sender.

    The standard library's http.client, not httpx: it costs about a quarter of the CPU
    per request, and the generator's CPU is taken from the app it shares a machine with.
    """

    def __init__(
        self, url: str, headers: Mapping[str, str], timeout_s: float, tls: ssl.SSLContext
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:  # the runner refuses such a URL before any sender starts
            raise ValueError(f"expected a base URL like http://127.0.0.1:8000, got {url!r}")
        self.prefix = parts.path.rstrip("/")
        self.headers = dict(headers)
        self.http: http.client.HTTPConnection
        if parts.scheme == "https":
            self.http = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout_s, context=tls)
        else:
            self.http = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        self.used = False

    def send(self, method: str, path: str) -> tuple[int, str | None]:
        try:
            status = self._exchange(method, path)
        except (OSError, http.client.HTTPException) as exc:
            self.http.close()
            return 0, f"{type(exc).__name__}: {exc}"[:200]
        return status, None if status < 400 else f"HTTP {status}"

    def _exchange(self, method: str, path: str) -> int:
        try:
            return self._once(method, path)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not self.used:
                raise
            # The server closed an idle keep-alive connection; any client retries that once.
            self.http.close()
            return self._once(method, path)

    def _once(self, method: str, path: str) -> int:
        self.http.request(method, self.prefix + path, headers=self.headers)
        response = self.http.getresponse()
        response.read()
        self.used = True
        return response.status

    def close(self) -> None:
        self.http.close()
