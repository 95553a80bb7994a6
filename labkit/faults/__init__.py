"""Real network faults between a client and its server, on every backend.

    >>> from labkit import faults
    >>> pg = faults.proxied("postgres")        # the endpoint, through this process's proxy
    >>> engine = create_engine(pg.url)
    >>> with faults.outage("postgres"):        # refused; open connections cut
    ...     ...
    >>> with faults.latency("redis", 200):     # +200 ms on every answer
    ...     ...

A proxy on 127.0.0.1 stands between the client and the server and breaks the link on
purpose, with Toxiproxy's fault types: **outage** (down: refuse, cut), **freeze** (accept,
move nothing: a hung server), **latency** (± jitter), **bandwidth** (bytes/s),
**reset_peer** (a TCP RST after N bytes), **slow_close** (a close arrives late). Each
returns a `Fault`: on until ``.off()`` or the end of its ``with`` block, so a notebook
cell can switch one on and a later cell off. Directions use Toxiproxy's words:
``"upstream"`` (client → server), ``"downstream"`` (server → client, the default), or
``"both"``.

The server is never touched, so this works where labkit cannot pause a server (an
external one, `labkit up`). Only clients that connect through the proxy see the faults:
`proxied(...)` gives them its address. `Proxy(host, port)` is the same machinery for any
TCP server. All proxies of a process share one event loop in one thread, started with
the first proxy and stopped with the last.
"""

from __future__ import annotations

from labkit.faults._proxy import Direction, Fault, FaultError, Proxy
from labkit.faults._services import (
    bandwidth,
    clear,
    close_all,
    freeze,
    latency,
    outage,
    proxied,
    proxy,
    reset_peer,
    slow_close,
)

__all__ = [
    "Direction",
    "Fault",
    "FaultError",
    "Proxy",
    "bandwidth",
    "clear",
    "close_all",
    "freeze",
    "latency",
    "outage",
    "proxied",
    "proxy",
    "reset_peer",
    "slow_close",
]
