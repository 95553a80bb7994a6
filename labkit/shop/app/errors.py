"""How failures become HTTP responses: one JSON shape, and never a 500 for an outage.

Every error body has ``error`` (a stable code to branch on) and ``message`` (for
people). An unavailable dependency — PostgreSQL down or frozen, the pool exhausted,
inventory or payment unreachable — is always the same 503 body, with Retry-After.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm.exc import StaleDataError

from labkit.shop.domain.orders import DownstreamError

log = logging.getLogger(__name__)

UNAVAILABLE_BODY = {"error": "Service temporarily unavailable", "message": "Please try again later"}


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
