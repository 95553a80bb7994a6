"""The demo shop: the system under test in every lesson.

A FastAPI app over PostgreSQL, Redis and RabbitMQ, with inventory and payment
services called over HTTP. It is a standalone application, split by role:

    labkit.shop.settings   ShopSettings: every host, secret and timeout (read by all)
    labkit.shop.data       models, engines and sessions, migrations
    labkit.shop.infra      the Redis cache, the RabbitMQ outbox publisher
    labkit.shop.domain     users, posts, orders, search, security, schemas
    labkit.shop.app        REST routers, GraphQL, errors, `create_app` (composition root)
    labkit.shop.workers    the order worker, the outbox relay and consumer
    labkit.shop.testing    test data, fakes, fixtures, and the glue to labkit's services

Build it against the live services of this process:

    >>> from labkit.shop import create_app
    >>> from labkit.shop.testing import settings_from_services
    >>> app = create_app(settings_from_services())

or serve it: ``python -m labkit.shop`` (``labkit shop serve``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labkit.shop.app import Shop, ShopServer, create_app, serve
    from labkit.shop.settings import ShopSettings

__all__ = ["Shop", "ShopServer", "ShopSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import labkit.shop.data` does not pull in FastAPI and uvicorn.
    if name == "ShopSettings":
        from labkit.shop.settings import ShopSettings

        return ShopSettings
    if name in ("Shop", "ShopServer", "create_app", "serve"):
        from labkit.shop import app

        return getattr(app, name)
    raise AttributeError(f"module 'labkit.shop' has no attribute {name!r}")
