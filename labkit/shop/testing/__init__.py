"""Support for testing the shop, in tests/ and in lesson notebooks.

    >>> from labkit.shop.testing import add_user, auth_header, queued_json, database_outage

Test data goes straight into PostgreSQL (`add_user`, `add_post`, `add_comment`,
`add_follow`); the API under test then reads it, and `reset_shop_data` empties every
shop table between tests. `FakeDownstream` serves fake inventory and payment services
over real HTTP. The pytest fixtures (`shop_client`, `shop_session`, …) are in
`labkit.shop.testing.fixtures`, a pytest plugin: ``-p labkit.shop.testing.fixtures``
(labkit's own pytest configuration and `labkit.notebook.setup()` load it).

This package is the only part of the shop that imports labkit's kit, all of it in
`labkit.shop.testing.live`: `settings_from_services`, `database_outage`, and serving
the shop on labkit's services (`serve`, `shop`, `shop_env`).

Names are imported on first use: loading the fixtures plugin (a submodule) must not
import the shop, FastAPI and the fakes into every pytest run and notebook kernel.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "labkit.shop.testing.fakes": (
        "Answer",
        "Call",
        "FakeDownstream",
        "FakeInventory",
        "FakePayment",
    ),
    "labkit.shop.testing.helpers": (
        "DEFAULT_PASSWORD",
        "TEST_TIMEOUTS",
        "add_comment",
        "add_follow",
        "add_post",
        "add_user",
        "auth_header",
        "client_for",
        "migrate_once",
        "queued_json",
        "reset_shop_data",
    ),
    "labkit.shop.testing.live": (
        "SERVICE_FIELDS",
        "database_outage",
        "serve",
        "settings_from_services",
        "shop",
        "shop_env",
        "shop_with_users",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "DEFAULT_PASSWORD",
    "SERVICE_FIELDS",
    "TEST_TIMEOUTS",
    "Answer",
    "Call",
    "FakeDownstream",
    "FakeInventory",
    "FakePayment",
    "add_comment",
    "add_follow",
    "add_post",
    "add_user",
    "auth_header",
    "client_for",
    "database_outage",
    "migrate_once",
    "queued_json",
    "reset_shop_data",
    "serve",
    "settings_from_services",
    "shop",
    "shop_env",
    "shop_with_users",
]


def __getattr__(name: str) -> Any:
    try:
        module = _MODULE_OF[name]
    except KeyError:
        raise AttributeError(f"module 'labkit.shop.testing' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return [*globals(), *__all__]
