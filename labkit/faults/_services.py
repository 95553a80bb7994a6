"""One proxy per service for this process, and faults switched on by service name.

`labkit.services` gives the server's endpoint; `proxied` gives the same endpoint through
this process's proxy to it, and `outage("postgres")` & co. break that proxy. The server
itself is never touched, so this works on every backend: Docker, local, `labkit up`, or a
server labkit was only given a URL for.
"""

from __future__ import annotations

import atexit
import threading

from labkit import services
from labkit.faults._proxy import Direction, Fault, FaultError, Proxy
from labkit.services import Endpoint

_PROXIES: dict[str, Proxy] = {}
_LOCK = threading.Lock()


def proxy(service: str) -> Proxy:
    """This process's proxy to `service` (started, as the service is, on first use).

    If the service was restarted on another port, the old proxy is closed and a new one
    made: a proxy always leads to the server `labkit.services.get` names now.
    """
    return _proxy_to(services.get(service))


def proxied(service: str | Endpoint) -> Endpoint:
    """The endpoint of `service` (a name, or an endpoint you hold) through its proxy.

    Give this to the code under test instead of ``services.get(name)``: the same
    credentials and database, the proxy's host and port, so that ``outage(name)``,
    ``latency(name, …)`` and the others reach it.

        >>> pg = faults.proxied("postgres")
        >>> engine = create_engine(pg.url)      # every connection goes through the proxy
        >>> with faults.outage("postgres"):
        ...     engine.connect()                # refused
    """
    if isinstance(service, Endpoint):
        return _proxy_to(service).endpoint_for(service)
    if not isinstance(service, str):
        raise FaultError(
            f"proxied() takes a service name such as 'postgres' or a labkit Endpoint, "
            f"got {type(service).__name__}"
        )
    endpoint = services.get(service)
    return _proxy_to(endpoint).endpoint_for(endpoint)


def outage(service: str) -> Fault:
    """`service` is down for clients of its proxy: refused, open connections cut."""
    return proxy(service).outage()


def freeze(service: str) -> Fault:
    """`service` hangs for clients of its proxy: connects succeed, nothing answers."""
    return proxy(service).freeze()


def latency(service: str, ms: float, jitter_ms: float = 0.0,
            direction: Direction = "downstream") -> Fault:
    """Every chunk to (or from) `service` waits `ms` ± `jitter_ms`."""
    return proxy(service).latency(ms, jitter_ms, direction)


def bandwidth(service: str, bytes_per_second: float, direction: Direction = "downstream"
              ) -> Fault:
    """At most `bytes_per_second` per connection to (or from) `service`."""
    return proxy(service).bandwidth(bytes_per_second, direction)


def reset_peer(service: str, after_bytes: int = 0, direction: Direction = "downstream") -> Fault:
    """Connections to `service` are reset (TCP RST) after `after_bytes` more bytes."""
    return proxy(service).reset_peer(after_bytes, direction)


def slow_close(service: str, ms: float, direction: Direction = "downstream") -> Fault:
    """A close from `service` (or to it) arrives `ms` late."""
    return proxy(service).slow_close(ms, direction)


def clear(service: str | None = None) -> None:
    """Switch off every fault on `service`'s proxy (on every proxy if None)."""
    with _LOCK:
        chosen = list(_PROXIES.values()) if service is None else [
            p for name, p in _PROXIES.items() if name == service
        ]
    for each in chosen:
        each.clear()


def close_all() -> None:
    """Close every service's proxy (registered to run at exit); `proxy` makes new ones."""
    with _LOCK:
        proxies = list(_PROXIES.values())
        _PROXIES.clear()
    for each in proxies:
        each.close()


def _proxy_to(endpoint: Endpoint) -> Proxy:
    with _LOCK:
        current = _PROXIES.get(endpoint.service)
        if current is not None and not current.closed and current.upstream == (
            endpoint.host, endpoint.port
        ):
            return current
        made = Proxy(endpoint.host, endpoint.port, name=endpoint.service)
        _PROXIES[endpoint.service] = made
    if current is not None:
        current.close()
    return made


atexit.register(close_all)
