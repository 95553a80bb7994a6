"""The shop's HTTP API: module-level routers, and `create_app(settings)`, the composition
root that builds the app (`Shop.from_settings`) against any endpoints.

    POST  /api/users                 sign up → 201 {id, email, name}; 409 email taken
    POST  /api/tokens                log in  → {accessToken, tokenType, expiresIn}; 429 after
                                     login_max_failures wrong passwords for an email, or
                                     login_max_failures_per_client from one client (Redis)
    GET   /api/users/{id}/profile    bearer  → {user, stats, recentActivity}, cached
    PATCH /api/users/{id}            bearer, own account only, {name} and nothing else
    POST  /api/users/{id}/follow     bearer  → 204, the caller follows {id}
    POST  /api/orders                bearer  → 201 {orderId, status, totalAmount}; with an
                                     Idempotency-Key header a retry is the same order,
                                     never a second charge (labkit.shop.domain.orders)
    GET   /api/search?q=             full-text search over posts
    GET   /health                    200 when PostgreSQL answers
    POST  /graphql                   see labkit.shop.app.graphql

Side effects are ordered so that a failure leaves nothing half-done: the database
commit comes first (with the event in the outbox), then the cache, then the broker.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from labkit.shop.app.container import Shop
from labkit.shop.app.errors import ApiError, error_responses, install_error_handlers
from labkit.shop.app.graphql import GraphQLBodyLimit, graphql_router
from labkit.shop.data.models import User
from labkit.shop.domain import users
from labkit.shop.domain.orders import IdempotencyKeyReused, Outcome, place_order
from labkit.shop.domain.schemas import (
    LoginRequest,
    OrderCreate,
    OrderOut,
    SearchHit,
    SearchResults,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    storable,
    text_pattern,
)
from labkit.shop.domain.search import search_posts
from labkit.shop.domain.security import TokenError, issue_token, read_token
from labkit.shop.infra.cache import profile_key
from labkit.shop.infra.messaging import publish_now
from labkit.shop.settings import ShopSettings

log = logging.getLogger(__name__)


def create_app(settings: ShopSettings) -> FastAPI:
    """The shop as an ASGI app; its dependencies live on ``app.state.shop``."""
    shop = Shop.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Serving starts the background jobs (the outbox relay); shutting down stops
        # them, waiting for a pass in progress, off the event loop.
        shop.jobs.start()
        # What importing and building the app made (~150,000 objects: SQLAlchemy,
        # pydantic, strawberry) lives as long as the process: out of the collector's
        # sight, so a full collection no longer walks it, a pause of ~100 ms that
        # landed in some request's latency.
        gc.freeze()
        try:
            async with shop.serving():
                yield
        finally:
            await asyncio.to_thread(shop.close)

    app = FastAPI(title="labkit shop", version="1.0", lifespan=lifespan)
    app.state.shop = shop
    install_error_handlers(app)
    app.include_router(graphql_router(settings), prefix="/graphql")
    app.add_middleware(GraphQLBodyLimit, path="/graphql", max_bytes=settings.graphql_max_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    return app


# -- dependencies ----------------------------------------------------------------------


# The dependencies below are coroutines wherever they do not block: FastAPI runs a plain
# `def` dependency on its thread pool, and a hop there and back per dependency cost more
# than the whole cached profile read (py-spy: benchmarks/README.md, shop_speed.py).


async def get_shop(request: Request) -> Shop:
    return request.app.state.shop


ShopDep = Annotated[Shop, Depends(get_shop)]


async def get_session(shop: ShopDep) -> AsyncIterator[Session]:
    """A session for one request, closed once the response has been sent.

    A session connects on its first query, so making one does not block. Closing rolls
    back what the handler left open: that talks to PostgreSQL, on the thread pool, and
    only if the handler began a transaction (a cache hit never does). If the database
    went away after the handler's last query, that rollback fails when the client
    already has its answer: the pool drops the connection (the next request opens a
    fresh one) and the failure is logged, not raised into a response that has started.
    """
    session = shop.sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(_close, session)
        else:
            _close(session)


def _close(session: Session) -> None:
    """Close a request's session; a failure is logged, not raised (see `get_session`)."""
    try:
        session.close()
    except DBAPIError as exc:
        log.warning("closing a request's session failed, connection dropped: %s", exc)


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False)


async def current_user_id(
    shop: ShopDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> uuid.UUID:
    """The caller's user id from ``Authorization: Bearer <token>``; 401 otherwise.

    Tokens are stateless: one stays valid until it expires, even for a deleted user.
    Reads accept that; writes that need the user (orders, follows) check it exists.
    """
    if credentials is None:
        raise ApiError(401, "UNAUTHORIZED", "send Authorization: Bearer <token> (POST /api/tokens)")
    try:
        return read_token(shop.settings, credentials.credentials)
    except TokenError as exc:
        raise ApiError(401, "UNAUTHORIZED", str(exc)) from None


ViewerDep = Annotated[uuid.UUID, Depends(current_user_id)]
SearchText = Annotated[
    str,
    Query(min_length=1, max_length=200, json_schema_extra={"pattern": text_pattern(False, True)}),
    AfterValidator(storable),
]


def _not_found(user_id: uuid.UUID) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"no user with id {user_id}")


# -- routes ----------------------------------------------------------------------------
# Module-level routers, included by `create_app` in this order. A route's handler finds
# its collaborators (search_posts, place_order, …) as this module's globals at call time.

# Every route needs PostgreSQL, so every route can answer 503; each adds its own statuses
# (`error_responses`), so the OpenAPI document lists all that a client can get.
health_router = APIRouter(responses=error_responses(503))
users_router = APIRouter(responses=error_responses(503))
orders_router = APIRouter(responses=error_responses(503))
search_router = APIRouter(responses=error_responses(503))


@health_router.get("/health")
def health(session: SessionDep) -> dict[str, str]:
    session.execute(text("SELECT 1"))
    return {"status": "ok"}


@users_router.post(
    "/api/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=error_responses(400, 409, 422, described={409: "a user with this email exists"}),
)
def create_user(body: UserCreate, shop: ShopDep, session: SessionDep) -> dict[str, Any]:
    user, welcome = users.create_user(session, shop.settings, body)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        if "uq_users_email_lower" in str(exc.orig):
            raise ApiError(409, "EMAIL_TAKEN", f"a user with email {body.email} exists") from None
        raise
    # Only now, with the user committed, may anyone else hear of them.
    shown = users.public_fields(user)
    shop.cache.put_user(shown)
    publish_now(shop.sessions, shop.publisher, welcome.id)
    return shown


@users_router.post(
    "/api/tokens",
    response_model=TokenOut,
    responses=error_responses(400, 401, 422, 429, described={401: "wrong email or password"}),
)
def login(body: LoginRequest, request: Request, shop: ShopDep, session: SessionDep) -> TokenOut:
    email = str(body.email)
    client = request.client.host if request.client else None
    # Checked before the password, so a locked account cannot be guessed at either.
    lockout = shop.login_limit.locked_for(email, client)
    if lockout:
        whose = "this email" if lockout.by == "email" else "this client (any emails)"
        refused = ApiError(
            429,
            "TOO_MANY_LOGINS",
            f"{lockout.limit} failed logins for {whose} within "
            f"{shop.settings.login_failure_window_seconds} s; "
            f"try again in {lockout.retry_after} s",
            retryAfter=lockout.retry_after,
            limitedBy=lockout.by,
        )
        refused.headers = {"Retry-After": str(lockout.retry_after)}
        raise refused
    user = users.authenticate(session, shop.settings, email, body.password)
    if user is None:
        shop.login_limit.failed(email, client)
        raise ApiError(401, "UNAUTHORIZED", "wrong email or password")
    shop.login_limit.succeeded(email)
    return TokenOut(
        accessToken=issue_token(shop.settings, user.id), expiresIn=shop.settings.jwt_ttl_seconds
    )


@users_router.get("/api/users/{user_id}/profile", responses=error_responses(401, 404, 422))
async def profile(user_id: uuid.UUID, viewer: ViewerDep, shop: ShopDep) -> JSONResponse:
    # A coroutine: a cache hit is answered on the event loop (`Shop.cached_json`); only
    # a miss goes to the thread pool, where the database is read. No SessionDep: a hit
    # needs no session, and each dependency costs every request its solving.
    cached = await shop.cached_json(profile_key(user_id))
    if cached is not None:
        return JSONResponse(users.for_viewer(cached, viewer), headers={"X-Cache": "HIT"})
    full = await run_in_threadpool(_profile_from_database, shop, user_id)
    return JSONResponse(users.for_viewer(full, viewer), headers={"X-Cache": "MISS"})


def _profile_from_database(shop: Shop, user_id: uuid.UUID) -> dict[str, Any]:
    """The full profile built from PostgreSQL and left in the cache for the next read."""
    session = shop.sessions()
    try:
        user = session.get(User, user_id)
        if user is None:
            raise _not_found(user_id)
        full = users.build_profile(session, user)
    finally:
        _close(session)
    shop.cache.set_json(profile_key(user_id), full, shop.settings.profile_cache_ttl_seconds)
    return full


@users_router.patch(
    "/api/users/{user_id}",
    response_model=UserOut,
    responses=error_responses(
        400, 401, 403, 404, 409, 422, described={409: "changed by someone else meanwhile"}
    ),
)
def update_user(
    user_id: uuid.UUID, body: UserUpdate, viewer: ViewerDep, shop: ShopDep, session: SessionDep
) -> dict[str, Any]:
    if viewer != user_id:
        raise ApiError(403, "FORBIDDEN", "you may only change your own account")
    user = session.get(User, user_id)
    if user is None:
        raise _not_found(user_id)
    user.name = body.name
    session.commit()  # StaleDataError if someone else updated it meanwhile → 409
    shown = users.public_fields(user)
    shop.cache.put_user(shown)
    shop.cache.forget_profiles(user_id)
    return shown


@users_router.post(
    "/api/users/{user_id}/follow",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 422, described={403: "a user cannot follow themself"}),
)
def follow(user_id: uuid.UUID, viewer: ViewerDep, shop: ShopDep, session: SessionDep) -> Response:
    if viewer == user_id:
        raise ApiError(403, "CANNOT_FOLLOW_SELF", "a user cannot follow themself")
    if session.get(User, user_id) is None:
        raise _not_found(user_id)
    if session.get(User, viewer) is None:
        raise ApiError(401, "UNAUTHORIZED", "the token's user no longer exists")
    users.follow(session, viewer, user_id)
    session.commit()
    shop.cache.forget_profiles(viewer, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# Visible ASCII, as the IETF draft on the Idempotency-Key header uses (a UUID fits).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="a key of the client's choosing (a UUID): a retry with the same key is "
        "the same order, charged once",
    ),
]
ORDER_IN_PROGRESS_RETRY_AFTER_S = 5
# Built once: built per order, its construction and cache key cost 0.2 ms of CPU, a
# third of the check (a statement memoizes its cache key).
_USER_EXISTS = select(User.id).where(User.id == bindparam("user_id"))


@orders_router.post(
    "/api/orders",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    responses=error_responses(
        400, 401, 402, 409, 422,
        described={
            409: "some items are out of stock (INVENTORY_UNAVAILABLE), or the "
            "Idempotency-Key names an order still being completed (ORDER_IN_PROGRESS, see "
            "Retry-After) or another order (IDEMPOTENCY_KEY_REUSED)",
        },
    ),
)
def create_order(
    body: OrderCreate,
    viewer: ViewerDep,
    shop: ShopDep,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    if session.scalar(_USER_EXISTS, {"user_id": viewer}) is None:
        raise ApiError(401, "UNAUTHORIZED", "the token's user no longer exists")
    session.close()  # the saga opens its own short transactions; hold no connection
    try:
        placed = place_order(
            shop.sessions,
            shop.downstream,
            viewer,
            body,
            shop.settings.order_event_destinations,
            idempotency_key=idempotency_key,
            reconcile_after_seconds=shop.settings.order_reconcile_after_seconds,
        )
    except IdempotencyKeyReused as exc:
        raise ApiError(409, "IDEMPOTENCY_KEY_REUSED", str(exc), orderId=str(exc.order_id)) from None
    if placed.outcome is Outcome.INVENTORY_UNAVAILABLE:
        raise ApiError(409, "INVENTORY_UNAVAILABLE", "some items are not in stock")
    if placed.outcome is Outcome.PAYMENT_DECLINED:
        raise ApiError(
            402, "PAYMENT_DECLINED", "the payment was declined", orderId=str(placed.order_id)
        )
    if placed.outcome is Outcome.PENDING:
        in_progress = ApiError(
            409,
            "ORDER_IN_PROGRESS",
            "this order is being completed; send the same request with the same "
            f"Idempotency-Key again in {ORDER_IN_PROGRESS_RETRY_AFTER_S} s to learn its outcome",
            orderId=str(placed.order_id),
        )
        in_progress.headers = {"Retry-After": str(ORDER_IN_PROGRESS_RETRY_AFTER_S)}
        raise in_progress
    assert placed.order_id is not None, "a confirmed order always has its id"
    return OrderOut(orderId=placed.order_id, status="CONFIRMED", totalAmount=placed.total_amount)


@search_router.get("/api/search", response_model=SearchResults, responses=error_responses(422))
def search(
    q: SearchText, session: SessionDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> SearchResults:
    hits = search_posts(session, q, limit)
    return SearchResults(
        query=q,
        results=[SearchHit(id=h.id, type=h.type, title=h.title, rank=h.rank) for h in hits],
    )


ROUTERS = (health_router, users_router, orders_router, search_router)
