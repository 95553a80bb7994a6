"""A TCP proxy whose link to the server can be broken on purpose, Toxiproxy's way.

Each connection a client opens to the proxy gets its own connection to the server, and
four tasks move the bytes: a reader and a writer per direction, with a short queue
between them. The reader stamps each chunk with the time it may leave (latency), the
writer waits for that time, paces the bytes (bandwidth), counts them (reset), and holds
everything while the proxy is frozen. Splitting reader and writer keeps latency a delay,
not a throughput limit: chunks queue up behind one another as they do on a slow link.

Directions use Toxiproxy's words: *upstream* is client → server (requests), *downstream*
is server → client (answers). Faults default to downstream, as Toxiproxy's toxics do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import socket
import struct
import threading
from collections.abc import Iterable
from typing import Literal, Self, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from labkit.faults import _loop
from labkit.services import LOOPBACK, Endpoint

Direction: TypeAlias = Literal["upstream", "downstream", "both"]
DIRECTIONS: tuple[str, str] = ("upstream", "downstream")
CHUNK = 64 * 1024
QUEUED_CHUNKS = 16  # per direction and connection: at most 1 MiB held inside the proxy
UPSTREAM_CONNECT_TIMEOUT_S = 10.0
PACING_SLICES_PER_S = 50  # bandwidth: bytes leave in slices of 20 ms worth
_EOF = b""


class FaultError(ValueError):
    """A fault or a proxy was asked for with values it cannot take; the message says which."""


@dataclasses.dataclass
class _Toxics:
    """What the faults switched on add up to, for one direction."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    bytes_per_s: float | None = None
    reset_after: int | None = None
    slow_close_s: float = 0.0


class Fault:
    """One fault switched on at a proxy, until `off()` or the end of its ``with`` block.

    Faults stack: a second latency on the same direction wins while it is on, and the
    first one applies again after it. An outage or a freeze lasts while any is on.
    """

    def __init__(
        self, proxy: Proxy, kind: str, directions: tuple[str, ...], amount: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        self.proxy = proxy
        self.kind = kind
        self.directions = directions
        self.amount = amount
        self.jitter = jitter
        self._on = False

    @property
    def active(self) -> bool:
        return self._on

    def off(self) -> None:
        """Switch this fault off (again: nothing happens)."""
        if self._on:
            self._on = False
            self.proxy._remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.off()

    def __repr__(self) -> str:
        what = {
            "latency": f"latency {self.amount * 1000:g} ms ± {self.jitter * 1000:g} ms",
            "bandwidth": f"bandwidth {self.amount:g} bytes/s",
            "reset_peer": f"reset after {self.amount:g} bytes",
            "slow_close": f"slow close {self.amount * 1000:g} ms",
        }.get(self.kind, self.kind)
        where = f" {'/'.join(self.directions)}" if self.directions else ""
        return f"<Fault {what}{where} at {self.proxy.name} ({'on' if self._on else 'off'})>"


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.budget: dict[str, int | None] = {d: None for d in DIRECTIONS}
        self.task = asyncio.current_task()

    def kill(self, reset: bool) -> None:
        """Close both sides now; with `reset`, as a TCP RST (SO_LINGER 0) the peers see."""
        for writer in (self.client, self.server):
            if writer is None or writer.transport.is_closing() and not reset:
                continue
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                    except OSError:
                        pass  # already closed by the peer: nothing left to reset
            writer.transport.abort()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``upstream_host:upstream_port``, with faults to switch.

        >>> proxy = Proxy("127.0.0.1", 6379)
        >>> client = redis.Redis.from_url(proxy.url_for("redis://127.0.0.1:6379/0"))
        >>> with proxy.latency(200):          # +200 ms on every answer
        ...     client.ping()
        >>> proxy.close()

    Faults hit only clients connected through the proxy (its `host` and `port`): give
    the application `url_for(url)` or `endpoint_for(endpoint)` instead of the server's.
    """

    def __init__(self, upstream_host: str, upstream_port: int, name: str | None = None) -> None:
        if not upstream_host or not isinstance(upstream_port, int) or not 0 < upstream_port < 65536:
            raise FaultError(
                f"a proxy needs the server's host and TCP port (1-65535), got "
                f"{upstream_host!r}:{upstream_port!r}: e.g. Proxy('127.0.0.1', 5432)"
            )
        self.upstream: tuple[str, int] = (upstream_host, upstream_port)
        self.name = name or f"{upstream_host}:{upstream_port}"
        self.host = LOOPBACK
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self._closed = False
        self._loop = _loop.acquire()
        try:
            self.port: int = _loop.call(self._loop, self._start())
        except BaseException:
            _loop.release()
            raise

    # -- the synchronous face -------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connections(self) -> int:
        """Client connections open through the proxy right now."""
        return 0 if self._closed else _loop.call(self._loop, self._count())

    @property
    def faults(self) -> list[Fault]:
        """The faults switched on, oldest first."""
        with self._faults_lock:
            return list(self._faults)

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's (user, password, path kept).

        A URL with a port other than the upstream's is refused: it names another server.
        """
        parts = urlsplit(url)
        if not parts.hostname:
            raise FaultError(f"expected a URL with a host, like redis://127.0.0.1:6379, got {url!r}")
        if parts.port is not None and parts.port != self.upstream[1]:
            raise FaultError(
                f"{parts.hostname}:{parts.port} is not this proxy's server "
                f"({self.upstream[0]}:{self.upstream[1]}): make a Proxy for that server instead"
            )
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.host}:{self.port}"))

    def endpoint_for(self, endpoint: Endpoint) -> Endpoint:
        """`endpoint` reached through the proxy: same credentials, the proxy's host and port."""
        return dataclasses.replace(
            endpoint, url=self.url_for(endpoint.url), host=self.host, port=self.port,
            origin=f"{endpoint.origin}, through labkit.faults" if endpoint.origin
            else "through labkit.faults",
        )

    def outage(self) -> Fault:
        """The server is down: new connections are refused, open ones are cut."""
        return self._add(Fault(self, "outage", ()))

    def freeze(self) -> Fault:
        """The server hangs: connections are accepted, nothing moves either way.

        What a stopped process, a stalled VM or a silently dropping network look like.
        Bytes in flight are held, not lost: they move on when the freeze ends.
        """
        return self._add(Fault(self, "freeze", ()))

    def latency(self, ms: float, jitter_ms: float = 0.0, direction: Direction = "downstream"
                ) -> Fault:
        """Every chunk waits `ms` ± `jitter_ms` (uniform) before it is passed on."""
        _non_negative("latency ms", ms, "latency(200)")
        _non_negative("jitter_ms", jitter_ms, "latency(200, jitter_ms=50)")
        return self._add(Fault(self, "latency", _directions(direction), ms / 1000,
                               jitter_ms / 1000))

    def bandwidth(self, bytes_per_second: float, direction: Direction = "downstream") -> Fault:
        """At most `bytes_per_second` pass per connection and direction."""
        if not _is_number(bytes_per_second) or bytes_per_second <= 0:
            raise FaultError(
                f"bandwidth needs bytes per second > 0, got {bytes_per_second!r}: e.g. "
                "bandwidth(10_000); for no bytes at all use freeze()"
            )
        return self._add(Fault(self, "bandwidth", _directions(direction), bytes_per_second))

    def reset_peer(self, after_bytes: int = 0, direction: Direction = "downstream") -> Fault:
        """Each connection is reset (TCP RST) once `after_bytes` more bytes have passed.

        Counted per connection from the moment the fault applies to it; 0 resets at the
        next byte. The client sees "connection reset by peer" in the middle of a stream.
        """
        if not isinstance(after_bytes, int) or isinstance(after_bytes, bool) or after_bytes < 0:
            raise FaultError(
                f"reset_peer needs a whole number of bytes >= 0, got {after_bytes!r}: "
                "e.g. reset_peer(after_bytes=1024)"
            )
        return self._add(Fault(self, "reset_peer", _directions(direction), after_bytes))

    def slow_close(self, ms: float, direction: Direction = "downstream") -> Fault:
        """A side's close reaches the other side `ms` later (data still flows meanwhile)."""
        _non_negative("slow_close ms", ms, "slow_close(500)")
        return self._add(Fault(self, "slow_close", _directions(direction), ms / 1000))

    def clear(self) -> None:
        """Switch every fault off."""
        for fault in self.faults:
            fault.off()

    def close(self) -> None:
        """Stop listening, cut every connection; the last proxy closed stops the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            _loop.call(self._loop, self._stop())
        finally:
            _loop.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.faults)} fault(s) on"
        return (f"<Proxy {self.name}: {self.host}:{self.port} → "
                f"{self.upstream[0]}:{self.upstream[1]}, {state}>")

    def _add(self, fault: Fault) -> Fault:
        if self._closed:
            raise FaultError(f"the proxy to {self.name} is closed: make a new one")
        with self._faults_lock:
            fault._on = True
            self._faults.append(fault)
            faults = list(self._faults)
        _loop.call(self._loop, self._apply(faults, fault.kind))
        return fault

    def _remove(self, fault: Fault) -> None:
        with self._faults_lock:
            if fault in self._faults:
                self._faults.remove(fault)
            faults = list(self._faults)
        if not self._closed:
            _loop.call(self._loop, self._apply(faults, fault.kind))

    # -- on the loop ----------------------------------------------------------------

    async def _start(self) -> int:
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._toxics = {d: _Toxics() for d in DIRECTIONS}
        self._placeholder: socket.socket | None = None
        sock = _bound_socket(self.host, 0)
        self._server: asyncio.Server | None = await asyncio.start_server(self._serve, sock=sock)
        port: int = sock.getsockname()[1]
        return port

    async def _count(self) -> int:
        return len(self._links)

    async def _apply(self, faults: list[Fault], changed: str) -> None:
        toxics = {d: _Toxics() for d in DIRECTIONS}
        for fault in faults:  # the latest fault of a kind wins
            for direction in fault.directions:
                toxic = toxics[direction]
                if fault.kind == "latency":
                    toxic.latency_s, toxic.jitter_s = fault.amount, fault.jitter
                elif fault.kind == "bandwidth":
                    toxic.bytes_per_s = fault.amount
                elif fault.kind == "reset_peer":
                    toxic.reset_after = int(fault.amount)
                elif fault.kind == "slow_close":
                    toxic.slow_close_s = fault.amount
        self._toxics = toxics
        if changed == "reset_peer":  # counting starts afresh when the fault changes
            for link in self._links:
                link.budget = {d: toxics[d].reset_after for d in DIRECTIONS}
        if any(f.kind == "freeze" for f in faults):
            self._flowing.clear()
        else:
            self._flowing.set()
        await self._set_down(any(f.kind == "outage" for f in faults))

    async def _set_down(self, down: bool) -> None:
        if down and self._server is not None:
            self._server.close()  # closes the listening socket now
            self._server = None
            # Hold the port, bound but not listening: connecting gets "refused", and no
            # other program can take the port before the proxy listens on it again.
            self._placeholder = _bound_socket(self.host, self.port)
            for link in list(self._links):
                link.kill(reset=False)
        elif not down and self._server is None and self._placeholder is not None:
            sock, self._placeholder = self._placeholder, None
            self._server = await asyncio.start_server(self._serve, sock=sock)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        tasks = [link.task for link in self._links if link.task is not None]
        for link in list(self._links):
            link.kill(reset=False)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        link = _Link(client_writer)
        self._links.add(link)
        try:
            try:
                server_reader, server_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), UPSTREAM_CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                link.kill(reset=True)  # the server is unreachable: so is the proxy
                return
            link.server = server_writer
            link.budget = {d: self._toxics[d].reset_after for d in DIRECTIONS}
            to_server: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)
            to_client: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)
            tasks = [
                asyncio.ensure_future(self._read(client_reader, to_server, "upstream")),
                asyncio.ensure_future(self._write(link, server_writer, to_server, "upstream")),
                asyncio.ensure_future(self._read(server_reader, to_client, "downstream")),
                asyncio.ensure_future(self._write(link, client_writer, to_client, "downstream")),
            ]
            try:
                await _until_done_or_failed(tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # cut by an outage, a reset or close(): the link is already killed
        finally:
            self._links.discard(link)
            link.kill(reset=False)

    async def _read(self, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[float, bytes]], direction: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._flowing.wait()  # frozen: read nothing, so the sender's buffers fill
            data = await reader.read(CHUNK)
            toxic = self._toxics[direction]
            delay = toxic.latency_s
            if toxic.jitter_s:
                delay += random.uniform(-toxic.jitter_s, toxic.jitter_s)
            await queue.put((loop.time() + max(0.0, delay), data))
            if data == _EOF:
                return

    async def _write(self, link: _Link, writer: asyncio.StreamWriter,
                     queue: asyncio.Queue[tuple[float, bytes]], direction: str) -> None:
        loop = asyncio.get_running_loop()
        last_due = next_send = 0.0
        while True:
            due, data = await queue.get()
            last_due = max(due, last_due)  # jitter never reorders bytes
            if (wait := last_due - loop.time()) > 0:
                await asyncio.sleep(wait)
            await self._flowing.wait()
            toxic = self._toxics[direction]
            if data == _EOF:
                if toxic.slow_close_s:
                    await asyncio.sleep(toxic.slow_close_s)
                if writer.can_write_eof():
                    writer.write_eof()  # a half-close: the other direction may go on
                return
            budget = link.budget[direction]
            if budget is not None:
                if len(data) > budget:
                    if budget:
                        writer.write(data[:budget])
                        await writer.drain()
                    link.kill(reset=True)
                    return
                link.budget[direction] = budget - len(data)
            if toxic.bytes_per_s:
                next_send = await _paced(writer, data, toxic.bytes_per_s, next_send)
            else:
                writer.write(data)
                await writer.drain()


async def _paced(writer: asyncio.StreamWriter, data: bytes, rate: float, next_send: float
                 ) -> float:
    """Write `data` at `rate` bytes/s in small slices; returns when the next may leave."""
    loop = asyncio.get_running_loop()
    piece = max(1, int(rate / PACING_SLICES_PER_S))
    for start in range(0, len(data), piece):
        part = data[start:start + piece]
        now = loop.time()
        next_send = max(next_send, now)
        if next_send > now:
            await asyncio.sleep(next_send - now)
        writer.write(part)
        await writer.drain()
        next_send += len(part) / rate
    return next_send


async def _until_done_or_failed(tasks: Iterable[asyncio.Future[None]]) -> None:
    """Wait until all `tasks` finished, or one failed (a connection broke: end the link)."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
        if any(not task.cancelled() and task.exception() for task in done):
            return


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FaultError(f"could not bind the proxy to {host}:{port}: {exc}") from exc
    sock.setblocking(False)
    return sock


def _directions(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    raise FaultError(
        f"direction must be 'upstream' (client → server), 'downstream' (server → client) "
        f"or 'both', got {direction!r}"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _non_negative(what: str, value: object, example: str) -> None:
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise FaultError(f"{what} must be a number >= 0, got {value!r}: e.g. {example}")
