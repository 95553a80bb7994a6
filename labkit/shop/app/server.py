"""Serving the shop over real HTTP: `serve()` for people, `ShopServer` for tests.

$ python -m labkit.shop --port 8000          # or: labkit shop serve (on labkit's services)
>>> with ShopServer(app) as server: httpx.get(f"{server.url}/health")
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Self

from fastapi import FastAPI

from labkit.shop.app.api import create_app
from labkit.shop.app.container import Shop
from labkit.shop.data.db import upgrade
from labkit.shop.settings import ShopSettings, settings_environment
from labkit.shop.workers.background import BackgroundJobs


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ShopSettings | None = None,
    notes: Sequence[str] = (),
    workers: int = 1,
    access_log: bool = True,
) -> None:
    """Migrate the schema, then serve the shop with uvicorn until interrupted (Ctrl-C).

    The app's lifespan runs the shop's background jobs meanwhile: the outbox relay
    every ``settings.outbox_relay_interval`` seconds (0: off).

    `settings` default to the ``LABKIT_SHOP_*`` environment; `notes` are printed under
    the banner. ``labkit shop serve`` (`labkit.shop.testing.serve`) passes settings on
    labkit's live services, with fake inventory and payment services.

    `workers` > 1 serves from that many processes (one Python process uses one core at
    most). Each builds its app from these settings, passed in its environment, JWT
    secret included: a token issued by one worker verifies in every other. Their
    background jobs run in each, safely (rows are claimed with SKIP LOCKED).
    `access_log` prints a line per request: for people watching, not for a load test.
    """
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if settings is None:
        settings = ShopSettings()  # type: ignore[call-arg]  # fields from LABKIT_SHOP_*
    upgrade(settings.database_url)
    processes = f", {workers} worker processes" if workers > 1 else ""
    print(f"labkit shop on http://{host}:{port}  (API docs at /docs, GraphQL at /graphql{processes})")
    relay = settings.outbox_relay_interval
    print(f"  outbox relay every {relay:g} s" if relay else "  outbox relay off (interval 0)")
    for note in notes:
        print(f"  {note}")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": access_log,
        **proxy_options(settings.forwarded_allow_ips),
    }
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    # uvicorn starts each worker from an import string, in a fresh interpreter that
    # inherits this environment: the settings travel there.
    os.environ.update(settings_environment(settings))
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)


def app_from_environment() -> FastAPI:
    """The shop built from the ``LABKIT_SHOP_*`` environment: a uvicorn worker's app."""
    return create_app(ShopSettings())  # type: ignore[call-arg]  # fields from LABKIT_SHOP_*


def proxy_options(forwarded_allow_ips: str) -> dict[str, Any]:
    """uvicorn's options for trusting X-Forwarded-For from exactly these proxies.

    uvicorn's own default trusts the header from 127.0.0.1 (or $FORWARDED_ALLOW_IPS):
    then a client on the shop's machine could name any address it likes, and the login
    limit per client would count nothing. Empty: the header is ignored, the client is
    the connection's peer.
    """
    if not forwarded_allow_ips.strip():
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": forwarded_allow_ips}


class ShopServer:
    """The shop app served by uvicorn on a free local port, in a background thread.

    For clients that need a real socket (load tests, a browser, another process):

        >>> with ShopServer(app) as server:
        ...     httpx.get(f"{server.url}/health")

    While it serves, the shop's background jobs run (its outbox relay), as under
    ``labkit shop serve``; ``background=False`` serves without them. The app's lifespan
    stays off: its shutdown closes the shop's clients, and a test's app outlives the
    server (one app, several servers, a TestClient after). So the server starts and
    stops the jobs itself, binds the shop's cache reads to its loop (`Shop.serving`),
    and leaves the app open.
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, background: bool = True
    ) -> None:
        import uvicorn

        # A shop app's proxies come from its settings; any other app trusts none.
        shop = getattr(getattr(app, "state", None), "shop", None)
        trusted = shop.settings.forwarded_allow_ips if shop is not None else ""
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            **proxy_options(trusted),
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self.shop: Shop | None = shop
        self.jobs: BackgroundJobs | None = shop.jobs if background and shop is not None else None

    @property
    def url(self) -> str:
        sockets = [s for server in self.server.servers for s in server.sockets]
        if not sockets:
            raise RuntimeError("the shop server is not started: use start() or `with`")
        host, port = sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout: float = 10.0) -> Self:
        self._thread = threading.Thread(target=self._run, name="shop-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the shop server did not start within {timeout}s (see its log)")
            time.sleep(0.02)
        if self.jobs is not None:
            self.jobs.start()
        return self

    def _run(self) -> None:
        # uvicorn's Server.run, plus what serving binds to the serving loop (`Shop.serving`).
        with asyncio.Runner(loop_factory=self.config.get_loop_factory()) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        if self.shop is None:
            await self.server.serve()
            return
        async with self.shop.serving():
            await self.server.serve()

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.jobs is not None:
            self.jobs.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
