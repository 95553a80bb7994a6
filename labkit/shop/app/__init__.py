"""The shop as a web application: REST routes, GraphQL, error handling, and the
composition root that builds it from its settings.

    >>> from labkit.shop.app import create_app, ShopServer
    >>> app = create_app(settings)               # Shop.from_settings(settings) inside
    >>> with ShopServer(app) as server: ...      # served on a free local port

`api` and `graphql` are public modules: lessons replace one of their collaborators
(``monkeypatch.setattr(graphql, "load_user_graph", …)``) to see a test catch the change.
"""

from labkit.shop.app import api, graphql
from labkit.shop.app.api import (
    ROUTERS,
    SessionDep,
    ShopDep,
    ViewerDep,
    create_app,
    current_user_id,
    get_session,
    get_shop,
    health_router,
    orders_router,
    search_router,
    users_router,
)
from labkit.shop.app.container import Shop
from labkit.shop.app.errors import (
    ERROR_RESPONSES,
    UNAVAILABLE_BODY,
    ApiError,
    ErrorBody,
    error_responses,
    install_error_handlers,
    is_unavailable,
    unavailable_response,
)
from labkit.shop.app.graphql import GraphQLBodyLimit, build_schema, graphql_router, schema
from labkit.shop.app.server import ShopServer, serve

__all__ = [
    "ERROR_RESPONSES",
    "ROUTERS",
    "UNAVAILABLE_BODY",
    "ApiError",
    "ErrorBody",
    "GraphQLBodyLimit",
    "SessionDep",
    "Shop",
    "ShopDep",
    "ShopServer",
    "ViewerDep",
    "api",
    "build_schema",
    "create_app",
    "current_user_id",
    "error_responses",
    "get_session",
    "get_shop",
    "graphql",
    "graphql_router",
    "health_router",
    "install_error_handlers",
    "is_unavailable",
    "orders_router",
    "schema",
    "search_router",
    "serve",
    "unavailable_response",
    "users_router",
]
