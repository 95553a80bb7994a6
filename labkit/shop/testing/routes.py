"""Serve one route of the shop with another handler: how a lesson runs a test against a
broken version of an endpoint, on the real database, cache and queue.

    >>> from labkit.shop.testing.routes import replace_route, serving
    >>> replace_route(app, "PATCH", "/api/users/{user_id}", rename_anyone)
    >>> run_expecting_failure("-k", "duplicate", plugins=[serving("POST", "/api/users", buggy)])

FastAPI picks the first route that matches a request, so the replacement goes first;
the shop's own handler stays registered behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

__all__ = ["RouteSwap", "replace_route", "serving", "swap_route"]


def replace_route(
    app: FastAPI, method: str, path: str, endpoint: Callable[..., Any], **route_options: Any
) -> None:
    """Serve ``method path`` in `app` with `endpoint`, ahead of the app's own handler.

    `route_options` are FastAPI's (``status_code=201``, ``response_model=UserOut``):
    give the ones the shop's route has, so that only the handler's body differs.
    """
    app.add_api_route(path, endpoint, methods=[method], **route_options)
    app.router.routes.insert(0, app.router.routes.pop())


def swap_route(
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    endpoint: Callable[..., Any],
    **route_options: Any,
) -> None:
    """`replace_route` for one test: `monkeypatch` gives `app` its own routes back after.

    >>> def test_x(shop_app, shop_client, monkeypatch):
    ...     swap_route(shop_app, monkeypatch, "POST", "/api/users", sign_up, status_code=201)
    """
    monkeypatch.setattr(app.router, "routes", list(app.router.routes))
    replace_route(app, method, path, endpoint, **route_options)


class RouteSwap:
    """A pytest plugin: each test it runs with sees `shop_app` serve one route with
    another handler; `monkeypatch` restores the shop's routes after the test."""

    def __init__(
        self, method: str, path: str, endpoint: Callable[..., Any], **route_options: Any
    ) -> None:
        self.method, self.path, self.endpoint = method, path, endpoint
        self.route_options = route_options

    @pytest.fixture(autouse=True)
    def swapped_route(self, shop_app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
        swap_route(shop_app, monkeypatch, self.method, self.path, self.endpoint,
                   **self.route_options)


def serving(
    method: str, path: str, endpoint: Callable[..., Any], **route_options: Any
) -> RouteSwap:
    """A plugin for ``ipytest.run(plugins=[…])``: the shop serves `path` with `endpoint`."""
    return RouteSwap(method, path, endpoint, **route_options)
