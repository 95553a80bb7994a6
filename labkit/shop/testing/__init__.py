"""Support for testing the shop, in tests/ and in lesson notebooks.

    >>> from labkit.shop.testing import add_user, auth_header, queued_json, database_outage

Test data goes straight into PostgreSQL (`add_user`, `add_post`, `add_comment`,
`add_follow`); the API under test then reads it, and `reset_shop_data` empties every
shop table between tests. `FakeDownstream` serves fake inventory and payment services
over real HTTP. The pytest fixtures (`shop_client`, `shop_session`, …) are in
`labkit.shop.testing.fixtures`, loaded as the ``labkit-shop`` pytest11 plugin.

This package is the only part of the shop that imports labkit's kit, all of it in
`labkit.shop.testing.live`: `settings_from_services`, `database_outage`, and serving
the shop on labkit's services (`serve`, `shop`, `shop_env`).
"""

from labkit.shop.testing.fakes import Answer, Call, FakeDownstream, FakeInventory, FakePayment
from labkit.shop.testing.helpers import (
    DEFAULT_PASSWORD,
    TEST_TIMEOUTS,
    add_comment,
    add_follow,
    add_post,
    add_user,
    auth_header,
    client_for,
    migrate_once,
    queued_json,
    reset_shop_data,
)
from labkit.shop.testing.live import (
    SERVICE_FIELDS,
    database_outage,
    serve,
    settings_from_services,
    shop,
    shop_env,
)

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
]
