"""How failures become HTTP responses: one JSON shape, and never a 500 for an outage.

Every error body has ``error`` (a stable code to branch on) and ``message`` (for
people). An unavailable dependency — PostgreSQL down or frozen, the pool exhausted,
inventory or payment unreachable — is always the same 503 body, with Retry-After.

`error_responses(...)` says the same to the OpenAPI document: each route lists the
statuses it can answer with, their body (`ErrorBody`) and headers, from one mapping
(`ERROR_RESPONSES`), so the document and the handlers below cannot drift apart silently
(schemathesis checks every response against it: tests/shop/test_openapi.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Literal

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from labkit.shop.domain.orders import DownstreamError

log = logging.getLogger(__name__)
_KNOWN = {status.value for status in HTTPStatus}

UNAVAILABLE_BODY = {"error": "Service temporarily unavailable", "message": "Please try again later"}


class ErrorBody(BaseModel):
    """The JSON of every error response; some errors add fields (`extra` allowed)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="a stable code to branch on, e.g. NOT_FOUND")
    message: str | None = Field(None, description="what went wrong and what to do, for people")


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="where: body / query / path, then the field")
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    """422: each problem in ``detail``, never echoing the input."""

    error: Literal["VALIDATION_FAILED"]
    detail: list[FieldProblem]


class TooManyLoginsBody(ErrorBody):
    error: Literal["TOO_MANY_LOGINS"]
    retryAfter: int = Field(description="seconds, as in the Retry-After header")
    limitedBy: Literal["email", "client"] = Field(
        description="whose failed logins reached the limit: this email's or this client's"
    )


def _retry_after(why: str) -> dict[str, Any]:
    return {
        "Retry-After": {
            "description": why,
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }


ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the body is not JSON, or not in UTF-8"},
    401: {
        "model": ErrorBody,
        "description": "no bearer token, or one that is invalid, expired or whose user is gone",
        "headers": {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}
        },
    },
    402: {"model": ErrorBody, "description": "the payment was declined"},
    403: {"model": ErrorBody, "description": "not allowed for this user"},
    404: {"model": ErrorBody, "description": "no such resource"},
    409: {"model": ErrorBody, "description": "conflicts with the current state"},
    422: {"model": ValidationErrorBody, "description": "the request does not match the schema"},
    429: {
        "model": TooManyLoginsBody,
        "description": "too many failed logins for this email or from this client",
        "headers": _retry_after("seconds until logins are counted again"),
    },
    503: {
        "model": ErrorBody,
        "description": "a dependency (PostgreSQL, inventory, payment) is unavailable",
        "headers": _retry_after("seconds to wait before retrying"),
    },
}


def error_responses(
    *statuses: int, described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses=`` of a route that can answer with these error statuses.

    `described` gives a route's own wording for a status (409: "email taken"); the
    body and headers stay the shared ones.
    """
    described = described or {}
    return {
        status: {
            **ERROR_RESPONSES[status],
            **({"description": described[status]} if status in described else {}),
        }
        for status in statuses
    }


class ApiError(Exception):
    """An expected failure with its status code, e.g. ApiError(404, "NOT_FOUND", "no user …")."""

    def __init__(self, status: int, error: str, message: str = "", **extra: Any) -> None:
        super().__init__(message or error)
        self.status = status
        self.body = {"error": error, **({"message": message} if message else {}), **extra}
        self.headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None


def is_unavailable(exc: BaseException) -> bool:
    """True for failures that mean "a dependency is down", not "this request is wrong"."""
    if isinstance(exc, DownstreamError | sa_exc.TimeoutError | psycopg.OperationalError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return False


def unavailable_response() -> JSONResponse:
    return JSONResponse(UNAVAILABLE_BODY, status_code=503, headers={"Retry-After": "5"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own refusals (a body that is not UTF-8, an unknown path, a
        # method the path does not allow) in the shop's shape, their headers (Allow) kept.
        code = HTTPStatus(exc.status_code).name if exc.status_code in _KNOWN else "HTTP_ERROR"
        return JSONResponse(
            {"error": code, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what: pydantic's "input" would echo the request back (a
        # password, say) and its "ctx" may hold objects that are not JSON.
        fields = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        return JSONResponse(
            {"error": "VALIDATION_FAILED", "message": "the request is invalid", "detail": fields},
            status_code=422,
        )

    @app.exception_handler(StaleDataError)
    async def _stale(request: Request, exc: StaleDataError) -> JSONResponse:
        return JSONResponse(
            {
                "error": "CONCURRENT_UPDATE",
                "message": "changed by someone else meanwhile: reload and retry",
            },
            status_code=409,
        )

    async def _dependency_failure(request: Request, exc: Exception) -> JSONResponse:
        if is_unavailable(exc):
            log.warning("%s %s: dependency unavailable: %s", request.method, request.url.path, exc)
            return unavailable_response()
        raise exc

    for kind in (sa_exc.DBAPIError, sa_exc.TimeoutError, psycopg.OperationalError, DownstreamError):
        app.add_exception_handler(kind, _dependency_failure)
