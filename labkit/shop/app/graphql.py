"""The GraphQL API (strawberry), mounted at ``/graphql``: queries by POST only; GET
serves the GraphiQL page when ``ShopSettings.graphql_ide`` is on (a 405 otherwise).

    query { user(id: "…") { id name posts { id title comments { id content author { name } } }
                             followers { id name } } }
    mutation { createPost(input: {title: "…", content: "…", authorId: "…", tags: ["…"]})
               { id title author { id name } createdAt } }
    query { search(query: "…") { id type title } }

Resolvers load whole object graphs eagerly (`load_user_graph`: one query per level,
never one per row) in a worker thread, and return plain strawberry objects, so no
lazy load — and no blocking call — ever happens on the event loop.

createPost needs a bearer token, and only for its own authorId: posting as someone
else is refused (object-level authorization). A user's email is shown to themself only.

A client chooses how much work one request asks for, so each request is bounded before
any resolver runs (limits in `ShopSettings`, ``graphql_max_*``): its body size
(`GraphQLBodyLimit`, 413 before parsing), its tokens (`count_tokens` refuses a long
document before graphql-core's parser sees it), its aliases, and how many of its fields
query the database (`database_field_limit`). A refusal costs a few milliseconds and is
logged in one line, so a flood of them leaves /health fast (benchmarks/graphql_abuse.py).
A malformed request (not a JSON object in UTF-8, a field of the wrong type, a bad bearer
token) is a 400 or 401 saying what is wrong, never a 500.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import strawberry
from cross_web import HTTPException as StrawberryHTTPException  # what strawberry answers 4xx with
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from graphql import FieldNode, GraphQLError, ValidationContext, ValidationRule
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry import UNSET
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
)
from strawberry.fastapi import BaseContext, GraphQLRouter
from strawberry.types import ExecutionContext
from strawberry.utils.logging import StrawberryLogger

from labkit.shop.app.container import Shop
from labkit.shop.app.errors import ApiError, is_unavailable
from labkit.shop.data import models
from labkit.shop.domain.posts import create_post, load_user_graph
from labkit.shop.domain.schemas import Content, Tag, Title
from labkit.shop.domain.search import search_posts
from labkit.shop.domain.security import TokenError, read_token
from labkit.shop.infra.messaging import publish_now
from labkit.shop.settings import ShopSettings

T = TypeVar("T")
log = logging.getLogger(__name__)


@strawberry.type
class Author:
    id: strawberry.ID
    name: str


@strawberry.type
class Comment:
    id: strawberry.ID
    content: str
    created_at: datetime
    author: Author


@strawberry.type
class Post:
    id: strawberry.ID
    title: str
    content: str
    tags: list[str]
    created_at: datetime
    author: Author
    comments: list[Comment]


@strawberry.type
class User:
    id: strawberry.ID
    name: str
    email: str | None = strawberry.field(description="only visible to the user themself")
    posts: list[Post]
    followers: list[Author]


@strawberry.type
class SearchHit:
    id: strawberry.ID
    type: str
    title: str
    rank: float


@strawberry.input
class CreatePostInput:
    title: str
    content: str
    author_id: strawberry.ID
    tags: list[str] = strawberry.field(default_factory=list)


class _PostFields(BaseModel):
    """The same bounds as the REST API, so GraphQL cannot store what REST refuses."""

    title: Title  # type: ignore[valid-type]
    content: Content  # type: ignore[valid-type]
    tags: list[Tag] = Field(default_factory=list, max_length=10)  # type: ignore[valid-type]


def _author(user: models.User) -> Author:
    return Author(id=strawberry.ID(str(user.id)), name=user.name)


def _post(post: models.Post, author: models.User) -> Post:
    return Post(
        id=strawberry.ID(str(post.id)),
        title=post.title,
        content=post.content,
        tags=list(post.tags),
        created_at=post.created_at,
        author=_author(author),
        comments=[
            Comment(
                id=strawberry.ID(str(c.id)),
                content=c.content,
                created_at=c.created_at,
                author=_author(c.author),
            )
            for c in post.comments
        ],
    )


def _uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise GraphQLError(
            f"{field} must be a UUID, got {value!r}", extensions={"code": "BAD_USER_INPUT"}
        ) from None


class Context(BaseContext):
    """What every resolver gets: the app's dependencies and who is asking (if anyone)."""

    def __init__(self, shop: Shop, viewer: uuid.UUID | None) -> None:
        super().__init__()
        self.shop = shop
        self.viewer = viewer


async def _context(request: Request) -> Context:
    shop: Shop = request.app.state.shop
    viewer = None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        try:
            viewer = read_token(shop.settings, token)
        except TokenError as exc:
            # Before any resolver runs, so not a GraphQLError (strawberry would let it
            # through as a 500): the request is refused over HTTP, in GraphQL's shape.
            message = f"{exc}: send a token from POST /api/tokens, or none to query anonymously"
            refused = ApiError(401, "UNAUTHENTICATED", message)
            refused.body = {
                "errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]
            }
            raise refused from None
    return Context(shop, viewer)


async def _in_thread(work: Callable[[], T]) -> T:
    """Run blocking database work off the event loop, with outages as a clean error."""
    try:
        return await run_in_threadpool(work)
    except Exception as exc:
        if is_unavailable(exc):
            raise GraphQLError(
                "Service temporarily unavailable", extensions={"code": "UNAVAILABLE"}
            ) from None
        raise


@strawberry.type
class Query:
    @strawberry.field
    async def user(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> User | None:
        user_id = _uuid(id, "id")
        context = info.context

        def load() -> User | None:
            with context.shop.sessions() as session:
                user = load_user_graph(session, user_id)
                if user is None:
                    return None
                return User(
                    id=strawberry.ID(str(user.id)),
                    name=user.name,
                    email=user.email if context.viewer == user.id else None,
                    posts=[_post(p, user) for p in user.posts],
                    followers=[_author(f) for f in user.followers],
                )

        return await _in_thread(load)

    @strawberry.field
    async def search(
        self, info: strawberry.Info[Context, None], query: str, limit: int = 20
    ) -> list[SearchHit]:
        if not 1 <= len(query.strip()) <= 200 or "\x00" in query:
            raise GraphQLError(
                "query must be 1 to 200 characters", extensions={"code": "BAD_USER_INPUT"}
            )
        limit = max(1, min(limit, 100))

        def find() -> list[SearchHit]:
            with info.context.shop.sessions() as session:
                hits = search_posts(session, query, limit)
            return [
                SearchHit(id=strawberry.ID(str(h.id)), type=h.type, title=h.title, rank=h.rank)
                for h in hits
            ]

        return await _in_thread(find)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_post(
        self, info: strawberry.Info[Context, None], input: CreatePostInput
    ) -> Post:
        context = info.context
        author_id = _uuid(input.author_id, "authorId")
        if context.viewer is None:
            raise GraphQLError(
                "createPost needs a bearer token: log in at POST /api/tokens",
                extensions={"code": "UNAUTHENTICATED"},
            )
        if context.viewer != author_id:
            raise GraphQLError("you may only post as yourself", extensions={"code": "FORBIDDEN"})
        try:
            fields = _PostFields(title=input.title, content=input.content, tags=input.tags)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise GraphQLError(
                f"invalid post: {problems}", extensions={"code": "BAD_USER_INPUT"}
            ) from None
        shop = context.shop

        def write() -> Post:
            with shop.sessions() as session:
                author = session.get(models.User, author_id)
                if author is None:
                    raise GraphQLError("author not found", extensions={"code": "NOT_FOUND"})
                post, notification = create_post(
                    session,
                    shop.settings,
                    author_id=author_id,
                    title=fields.title,
                    content=fields.content,
                    tags=fields.tags,
                )
                session.commit()
                session.refresh(post, ["created_at"])
                result = _post(post, author)
            shop.cache.forget_profiles(author_id)
            publish_now(shop.sessions, shop.publisher, notification.id)
            return result

        return await _in_thread(write)


def _is_unexpected(error: GraphQLError) -> bool:
    # Errors we raise on purpose, and GraphQL's own (syntax, unknown field), are for the
    # client; anything else may quote SQL or internals, so it is logged, not shown.
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


# Fields whose resolver queries the database, by the type they belong to.
DATABASE_FIELDS = {"Query": frozenset({"user", "search"}), "Mutation": frozenset({"createPost"})}


def database_field_limit(limit: int) -> type[ValidationRule]:
    """A validation rule refusing documents with more than `limit` database fields.

    Every `user`, `search` or `createPost` in a document runs SQL, and aliases let one
    request ask for a thousand of them; validation refuses the document before any
    resolver runs. Each field is counted once where it is written: a fragment on Query
    or Mutation can only be spread at the top, where repeated spreads merge.
    """

    class DatabaseFieldLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.count = 0

        def enter_field(self, node: FieldNode, *_: Any) -> None:
            parent = self.context.get_parent_type()
            if parent is not None and node.name.value in DATABASE_FIELDS.get(parent.name, ()):
                self.count += 1

        def leave_document(self, *_: Any) -> None:
            if self.count > limit:
                self.report_error(
                    GraphQLError(
                        f"{self.count} fields that query the database (user, search,"
                        f" createPost) in one request; the limit is {limit}"
                        " (graphql_max_database_fields): split the request",
                        extensions={"code": "TOO_MANY_DATABASE_FIELDS", "limit": limit},
                    )
                )

    return DatabaseFieldLimit


class GraphQLBodyLimit:
    """ASGI middleware: a POST body over `max_bytes` to `path` gets 413, never parsed.

    The body is read in chunks and the reading stops at the limit, so a 2 MB document
    costs no more than a small one; the GraphQL-over-HTTP spec allows 413 for it. A
    declared Content-Length over the limit is refused without reading anything.
    """

    def __init__(self, app: ASGIApp, *, path: str, max_bytes: int) -> None:
        self.app = app
        self.path = path
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = (
            f"request body over {self.max_bytes} bytes (graphql_max_body_bytes):"
            " send a smaller document, or fewer variables"
        )
        error = {
            "message": message,
            "extensions": {"code": "REQUEST_TOO_LARGE", "limit": self.max_bytes},
        }
        await JSONResponse({"errors": [error]}, status_code=413)(scope, receive, send)


def _default(setting: str) -> int:
    return int(ShopSettings.model_fields[setting].default)


class _ShopSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log what went wrong in the shop, not every mistake a client sends.

        strawberry logs each error with its location printed from the document: a refused
        255 kB document (on one line) became a log record of 3,000 lines, formatted on
        the event loop for every such request, most of its refusal time. Errors meant
        for the client (syntax, validation, limits, our own GraphQLErrors) are logged in
        one short line at DEBUG; unexpected ones as strawberry does.
        """
        for error in errors:
            if _is_unexpected(error):
                StrawberryLogger.error(error, execution_context)
            else:
                log.debug("GraphQL error for the client: %.200s", error.message)


def build_schema(
    *,
    max_tokens: int = _default("graphql_max_tokens"),
    max_aliases: int = _default("graphql_max_aliases"),
    max_database_fields: int = _default("graphql_max_database_fields"),
) -> strawberry.Schema:
    """The shop's schema, refusing documents over the given limits before they run."""
    # The schema has no cycles (an Author has no posts), so no query can nest deeper than
    # user → posts → comments → author: there is no need for a depth limiter.
    return _ShopSchema(
        query=Query,
        mutation=Mutation,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: MaxAliasesLimiter(max_alias_count=max_aliases),
            lambda: AddValidationRules([database_field_limit(max_database_fields)]),
            lambda: MaskErrors(should_mask_error=_is_unexpected),
        ],
    )


schema = build_schema()  # with the default limits


def graphql_router(settings: ShopSettings) -> GraphQLRouter[Context, None]:
    """The /graphql routes with `settings`' limits (add `GraphQLBodyLimit` to the app)."""
    limited = build_schema(
        max_tokens=settings.graphql_max_tokens,
        max_aliases=settings.graphql_max_aliases,
        max_database_fields=settings.graphql_max_database_fields,
    )
    router = _ShopGraphQLRouter(
        limited,
        context_getter=_context,
        graphql_ide="graphiql" if settings.graphql_ide else None,
        allow_queries_via_get=False,  # one way in: POST, where the body limit counts
    )
    router.max_tokens = settings.graphql_max_tokens
    for route in list(router.routes):
        if not isinstance(route, APIRoute):
            continue
        if "GET" in (route.methods or ()) and not settings.graphql_ide:
            # Nothing to GET: without the route, GET is a 405 whose Allow says POST.
            router.routes.remove(route)
        else:
            _document(route)
    return router


# GraphQL's tokens (graphql-core's lexer counts comments too), matched by one regular
# expression: strings and comments are one token each, whatever they hold.
_TOKEN = re.compile(
    r'"""(?:\\"""|[^"]|"(?!""))*"""'  # block string
    r'|"(?:\\.|[^"\\\n\r])*"'  # string
    r"|#[^\n\r]*"  # comment
    r"|[_A-Za-z][_0-9A-Za-z]*"  # name
    r"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"  # number
    r"|\.\.\."  # spread
    r"|[!$&()\[\]{}:=@|]"  # punctuator
)


def count_tokens(document: str, stop_after: int) -> int:
    """The tokens of `document`, counted up to `stop_after` + 1 (then it stops).

    graphql-core's parser, in pure Python, spent ~40 ms reaching the token limit of a
    long document, and ~15 ms more locating its error in the whole text; this count, in
    C, costs well under a millisecond, so an over-long document is refused before the
    parser sees it. The parser keeps its own limit (MaxTokensLimiter) for the rest.
    """
    return sum(1 for _ in itertools.islice(_TOKEN.finditer(document), stop_after + 1))


class _Refused(Exception):
    def __init__(self, response: JSONResponse) -> None:
        super().__init__()
        self.response = response


class _ShopGraphQLRouter(GraphQLRouter[Context, None]):
    """strawberry's router, refusing every malformed request envelope with a 400, and a
    document over `max_tokens` before it is parsed.

    strawberry checks `query` and `variables`, but a body that is not UTF-8, or JSON
    that is not an object (``5``), failed inside it as a 500, and a non-string
    `operationName` went through. GET is off, so only POST bodies come here.
    """

    max_tokens: int | None = None

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        try:
            return await super().run(request, context=context, root_value=root_value)
        except _Refused as refused:
            return refused.response

    def _refuse_long(self, query: object) -> None:
        limit = self.max_tokens
        if limit is None or not isinstance(query, str) or count_tokens(query, limit) <= limit:
            return
        # The parser's own words (and its 200), without the location it would compute.
        error = {
            "message": f"Syntax Error: Document contains more than {limit} tokens."
            " Parsing aborted. (graphql_max_tokens: split the request)",
            "extensions": {"code": "TOO_MANY_TOKENS", "limit": limit},
        }
        raise _Refused(JSONResponse({"data": None, "errors": [error]}))

    def parse_json(self, data: str | bytes) -> Any:
        try:
            request = json.loads(data)
        except ValueError:  # not JSON, or bytes that are not UTF-8
            raise StrawberryHTTPException(
                400, 'the body is not JSON in UTF-8: send {"query": "…"}'
            ) from None
        if isinstance(request, dict):
            name = request.get("operationName")
            if not isinstance(name, str | None):
                raise StrawberryHTTPException(
                    400, f"operationName must be a string or null, not {type(name).__name__}"
                )
            self._refuse_long(request.get("query"))
        elif not isinstance(request, list):  # a list is a batch: strawberry refuses it
            raise StrawberryHTTPException(
                400,
                f'the body must be a JSON object {{"query": "…"}}, not {type(request).__name__}',
            )
        return request


# What /graphql answers, for the OpenAPI document: strawberry declares its routes with
# an untyped 200 only. GraphQL's own schema (introspection) describes the queries; this
# describes the HTTP around them, so a client (or schemathesis) knows every status.
_GRAPHQL_ERRORS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": {"type": "string"},
            "locations": {"type": "array"},
            "path": {"type": "array"},
            "extensions": {"type": "object"},
        },
    },
}
_REFUSED = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["errors"],
            "properties": {"errors": _GRAPHQL_ERRORS},
        }
    }
}
_POST_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["query"],
                    "properties": {
                        "query": {
                            "type": "string",
                            "minLength": 1,
                            "description": "a GraphQL document",
                        },
                        "variables": {"type": ["object", "null"]},
                        "operationName": {"type": ["string", "null"]},
                        "extensions": {"type": ["object", "null"]},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "the GraphQL result: data, and errors for any field that failed"
            " (an outage is the error code UNAVAILABLE, a refused document names its limit)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "data": {"type": ["object", "null"]},
                            "errors": _GRAPHQL_ERRORS,
                            "extensions": {"type": "object"},
                        },
                    }
                }
            },
        },
        "400": {
            "description": "not a GraphQL request: a body that is not a JSON object in"
            " UTF-8, no query, or a field of the wrong type",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "401": {
            "description": "a bearer token was sent and is invalid or expired (send none"
            " to query anonymously)",
            "content": _REFUSED,
        },
        "413": {
            "description": "the body is over graphql_max_body_bytes; refused unread",
            "content": _REFUSED,
        },
    },
}
_GET_DOC: dict[str, Any] = {
    "responses": {
        "200": {
            "description": "the GraphiQL page, for people (ShopSettings.graphql_ide)",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        "400": {
            "description": "a query sent by GET: queries come by POST only",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
    }
}


def _document(route: APIRoute) -> None:
    methods = route.methods or set()
    if "POST" in methods:
        route.summary = "A GraphQL request (POST only; the document in the JSON body)"
        route.openapi_extra = _POST_DOC
    elif "GET" in methods:
        route.summary = "The GraphiQL page"
        route.response_class = HTMLResponse
        route.openapi_extra = _GET_DOC
