"""The shop's rules: users, posts, orders (a saga over inventory and payment), search,
security, and the validated shapes every API accepts and returns (`schemas`).

    >>> from labkit.shop.domain import UserCreate, place_order, search_posts, users

No web framework here: the REST and GraphQL APIs (`labkit.shop.app`) call these
functions, and so can a test, with a session and the settings.
"""

from labkit.shop.domain import orders, posts, schemas, search, security, users
from labkit.shop.domain.orders import (
    Downstream,
    DownstreamError,
    IdempotencyKeyReused,
    Outcome,
    PlacedOrder,
    order_id_for,
    order_total,
    place_order,
    reconcile_order,
    reconcile_orders,
)
from labkit.shop.domain.posts import create_post, load_user_graph
from labkit.shop.domain.schemas import (
    LoginRequest,
    OrderCreate,
    OrderItemIn,
    OrderOut,
    PublicUserOut,
    SearchHit,
    SearchResults,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    storable,
)
from labkit.shop.domain.search import Hit, search_posts
from labkit.shop.domain.security import (
    TokenError,
    issue_token,
    password_hasher,
    read_token,
    verify_password,
)

__all__ = [
    "Downstream",
    "DownstreamError",
    "Hit",
    "IdempotencyKeyReused",
    "LoginRequest",
    "OrderCreate",
    "OrderItemIn",
    "OrderOut",
    "Outcome",
    "PlacedOrder",
    "PublicUserOut",
    "SearchHit",
    "SearchResults",
    "TokenError",
    "TokenOut",
    "UserCreate",
    "UserOut",
    "UserUpdate",
    "create_post",
    "issue_token",
    "load_user_graph",
    "order_id_for",
    "order_total",
    "orders",
    "password_hasher",
    "place_order",
    "posts",
    "read_token",
    "reconcile_order",
    "reconcile_orders",
    "schemas",
    "search",
    "search_posts",
    "security",
    "storable",
    "users",
    "verify_password",
]
