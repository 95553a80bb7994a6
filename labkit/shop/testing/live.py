"""Where the shop meets labkit: the one module of the shop that imports the kit.

The shop is a standalone application configured by `ShopSettings`; this module joins it
to the live services of this process (`labkit.services`):

    >>> from labkit.shop.testing import settings_from_services, database_outage
    >>> app = create_app(settings_from_services(password_hash_profile="fast"))
    >>> with database_outage(settings.database_url): ...     # a real fault, not a mock

`shop` and `shop_env` serve the shop in a process of its own (uvicorn's factory reads
the ``LABKIT_SHOP_*`` variables); `serve` is ``labkit shop serve``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy.engine import make_url

from labkit.shop.settings import ShopSettings, given_in_environment, settings_environment

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "SERVICE_FIELDS",
    "database_outage",
    "serve",
    "settings_from_services",
    "shop",
    "shop_env",
]

SERVICE_FIELDS = {"database_url": "postgres", "redis_url": "redis", "amqp_url": "rabbitmq"}


def shop_with_users(users: int, **overrides: Any) -> tuple[ShopSettings, list[uuid.UUID]]:
    """What a load run of the shop starts from: settings on this process's services
    (fast password hashing, `overrides` on top), the schema migrated, every shop table
    emptied, then `users` users added. Returns the settings and the users' ids."""
    from sqlalchemy.orm import Session

    from labkit.shop.data import create_engine_for
    from labkit.shop.testing.helpers import add_user, migrate_once, reset_shop_data

    settings = settings_from_services(**{"password_hash_profile": "fast", **overrides})
    migrate_once(settings.database_url)
    engine = create_engine_for(settings)
    try:
        reset_shop_data(engine)
        with Session(engine) as session:
            ids = [add_user(session, commit=False).id for _ in range(users)]
            session.commit()
    finally:
        engine.dispose()
    return settings, ids


def settings_from_services(*, fault_layer: bool = False, **overrides: Any) -> ShopSettings:
    """Settings pointing at the live services of this process (started if needed).

    A URL given as an argument or in a LABKIT_SHOP_* variable wins: that service is
    then neither looked up nor started. With `fault_layer`, the shop reaches each server
    through this process's `labkit.faults` proxy to it (`outages.through_fault_layer`),
    on every backend, so `database_outage`, `outages.frozen("rabbitmq")` and the other
    faults reach it. Off by default: a load test (lesson 10) should not measure a proxy
    in this process.

    >>> settings = settings_from_services(password_hash_profile="fast")
    """
    from labkit import services
    from labkit.shop.testing.outages import through_fault_layer

    found = {
        field: (through_fault_layer(services.get(service)) if fault_layer
                else services.get(service)).url
        for field, service in SERVICE_FIELDS.items()
        if field not in overrides and not given_in_environment(field)
    }
    return ShopSettings(**{**found, **overrides})


@contextmanager
def database_outage(database_url: str, application_name: str = "labkit-shop") -> Iterator[None]:
    """PostgreSQL unreachable for the shop for the block: a real fault, not a mock.

    The shop's open connections to its database are terminated, then PostgreSQL is
    frozen for the shop (`outages.frozen`: the fault layer's proxy moves nothing, so
    `database_url` must go through it, as `shop_settings` does): the app's pre-ping sees
    its connection gone, and its reconnect hangs until ``db_connect_timeout``. On exit
    the freeze ends.

    Only this database's connections are terminated: on a shared server, other users'
    shops (same application name, other databases) are left alone.
    """
    from labkit.shop.testing.outages import frozen, require_fault_layer

    require_fault_layer(database_url)
    url = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database() "
            "AND pid <> pg_backend_pid()",
            (application_name,),
        )
    with frozen("postgres"):
        yield


def shop() -> FastAPI:
    """The demo shop configured from this process's ``LABKIT_SHOP_*`` environment.

    A factory for uvicorn in another process: ``serve_app("labkit.shop.testing:shop",
    factory=True, env=shop_env(settings), ready_path="/health")``.
    """
    from labkit.shop.app import create_app

    return create_app(ShopSettings())  # type: ignore[call-arg]  # fields from LABKIT_SHOP_*


def shop_env(settings: ShopSettings) -> dict[str, str]:
    """`settings` as the ``LABKIT_SHOP_*`` variables ``shop()`` reads in another process.

    The JWT secret goes along, so tokens made here (``auth_header``) are valid there.
    """
    return settings_environment(settings)


def serve(
    host: str = "127.0.0.1", port: int = 8000, workers: int = 1, access_log: bool = True
) -> None:
    """Serve the shop on this process's live services until interrupted (Ctrl-C).

    `workers` processes share one JWT secret (`labkit.shop.app.server.serve`).

    Unless LABKIT_SHOP_INVENTORY_URL / LABKIT_SHOP_PAYMENT_URL say otherwise, fake
    inventory and payment services run next to it, so orders work out of the box;
    GraphiQL answers at GET /graphql unless LABKIT_SHOP_GRAPHQL_IDE=false; and the
    outbox relay runs while it serves (LABKIT_SHOP_OUTBOX_RELAY_INTERVAL, 0.5 s).
    """
    from labkit.shop.app import server
    from labkit.shop.testing.fakes import FakeDownstream

    fakes: FakeDownstream | None = None
    overrides: dict[str, Any] = {}
    if not all(given_in_environment(f) for f in ("inventory_url", "payment_url")):
        fakes = FakeDownstream().start()
        overrides = {f: url for f, url in fakes.settings().items() if not given_in_environment(f)}
    try:
        notes = []
        if fakes is not None:
            notes.append(
                f"fake inventory at {fakes.inventory.url}, fake payment at {fakes.payment.url}"
            )
        if not given_in_environment("graphql_ide"):
            overrides["graphql_ide"] = True  # for the people this serves: GraphiQL
        server.serve(
            host,
            port,
            settings_from_services(**overrides),
            notes=notes,
            workers=workers,
            access_log=access_log,
        )
    finally:
        if fakes is not None:
            fakes.stop()
