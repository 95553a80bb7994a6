"""Run the shop: ``python -m labkit.shop [--host 127.0.0.1] [--port 8000]``.

It uses this process's live services (labkit.services), migrates the schema, and —
unless LABKIT_SHOP_INVENTORY_URL / LABKIT_SHOP_PAYMENT_URL say otherwise — serves
fake inventory and payment services next to it, so orders work out of the box.
"""

from __future__ import annotations

import argparse
import os

from labkit.shop.api import create_app
from labkit.shop.db import upgrade
from labkit.shop.fakes import FakeDownstream
from labkit.shop.settings import settings_from_services


def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the shop with uvicorn until interrupted (Ctrl-C)."""
    import uvicorn

    fakes: FakeDownstream | None = None
    overrides: dict[str, str] = {}
    if not (
        os.environ.get("LABKIT_SHOP_INVENTORY_URL") and os.environ.get("LABKIT_SHOP_PAYMENT_URL")
    ):
        fakes = FakeDownstream().start()
        overrides = fakes.settings()
    settings = settings_from_services(**overrides)
    upgrade(settings.database_url)
    print(f"labkit shop on http://{host}:{port}  (API docs at /docs, GraphQL at /graphql)")
    if fakes is not None:
        print(f"  fake inventory at {fakes.inventory.url}, fake payment at {fakes.payment.url}")
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    finally:
        if fakes is not None:
            fakes.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit.shop", description="Run the demo shop.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
