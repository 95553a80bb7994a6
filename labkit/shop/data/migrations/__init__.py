"""Alembic migrations for the shop schema. Run them with `labkit.shop.data.upgrade(url)`."""
