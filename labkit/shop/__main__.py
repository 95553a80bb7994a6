"""Run the shop: ``python -m labkit.shop [--host 127.0.0.1] [--port 8000] [--workers 1]``.

It uses this process's live services (labkit.services), migrates the schema, and —
unless LABKIT_SHOP_INVENTORY_URL / LABKIT_SHOP_PAYMENT_URL say otherwise — serves
fake inventory and payment services next to it, so orders work out of the box. This
launcher is the demo's, so it composes the shop from `labkit.shop.testing`; a
deployment calls `labkit.shop.serve(settings=…)`, which takes only `ShopSettings`.
"""

from __future__ import annotations

import argparse

from labkit.shop.testing import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit.shop", description="Run the demo shop.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args(argv)
    serve(args.host, args.port, workers=args.workers)


if __name__ == "__main__":
    main()
