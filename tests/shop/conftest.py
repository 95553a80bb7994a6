"""Shared fixtures for the shop's tests (also used by shop-B's test modules).

The fixtures live in labkit.shop.pytest_fixtures so lessons can load the same ones;
importing them here makes them visible to every test under tests/shop/.
"""

from labkit.shop.pytest_fixtures import (  # noqa: F401  (fixtures are found by name)
    make_shop_app,
    shop_app,
    shop_clean,
    shop_client,
    shop_db_session,
    shop_downstream,
    shop_fakes_server,
    shop_session,
    shop_settings,
)
