"""The demo shop: the system under test in every lesson.

A FastAPI app over PostgreSQL, Redis and RabbitMQ, with inventory and payment
services called over HTTP. Build it against the live services of this process:

    >>> from labkit.shop import create_app, settings_from_services
    >>> app = create_app(settings_from_services())

or serve it: ``python -m labkit.shop`` (`labkit.shop.serve`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ShopSettings", "create_app", "serve", "settings_from_services"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import labkit.shop.models` does not pull in FastAPI and uvicorn.
    if name == "create_app":
        from labkit.shop.api import create_app

        return create_app
    if name == "serve":
        from labkit.shop.server import serve

        return serve
    if name in ("ShopSettings", "settings_from_services"):
        from labkit.shop import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'labkit.shop' has no attribute {name!r}")
