"""RFC 9457 problem details with a stable ``code``, and the handlers that map failures to them.

Route code raises ``Problem``; the handlers here also turn request validation errors, MLS decode
errors and oversized bodies into 4xx answers so that bad input never becomes a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from roost.mls.errors import DecodeError

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("roost.server")


class Problem(Exception):
    """An error answer: HTTP status, stable machine-readable code, human detail."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra or {}


def problem_response(
    status: int,
    code: str,
    detail: str = "",
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:roost:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


# Default codes for HTTP errors raised by the framework itself (unknown route, wrong method).
_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


# SQLSTATE classes of an unavailable database: connection exception, insufficient resources
# (too many connections), object not in prerequisite state (lock not available, database not
# accepting connections), operator intervention (shutting down, cannot connect now).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "55", "57"})


def _database_unavailable(exc: Exception) -> bool:
    if isinstance(exc, PoolTimeoutError | OperationalError):
        return True
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return isinstance(code, str) and code[:2] in _UNAVAILABLE_SQLSTATE_CLASSES


# SQLSTATE 22021 character_not_in_repertoire (PostgreSQL refuses NUL in text); 22P05
# untranslatable_character.
_UNSTORABLE_TEXT_SQLSTATES = frozenset({"22021", "22P05"})


def _unstorable_text(exc: Exception) -> bool:
    """Text the database cannot hold. input_guard refuses it at the door; this is the backstop
    for a path that bypasses it, so that both engines still answer 400, not 500."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return (
        isinstance(exc, UnicodeEncodeError)
        or isinstance(orig, UnicodeEncodeError)
        or (isinstance(code, str) and code in _UNSTORABLE_TEXT_SQLSTATES)
    )


def unexpected_error_response(exc: Exception) -> JSONResponse:
    """The answer to an exception no route turned into a Problem (also for raw-ASGI paths)."""
    if _unstorable_text(exc):
        log.warning("refused text the database cannot store: %s", type(exc).__name__)
        return problem_response(
            400, "invalid_request", "the request holds text the server cannot store"
        )
    if _database_unavailable(exc):
        # The database is unreachable, out of connections or locked past the busy timeout:
        # an overload or outage, not a bug; nothing was committed, so a retry is safe.
        log.warning("database unavailable: %s", type(exc).__name__)
        return problem_response(
            503, "service_unavailable", "the server is busy; retry", {"Retry-After": "1"}
        )
    # Never leak internals; the traceback goes to the log without request payloads.
    log.exception("internal error: %s", type(exc).__name__)
    return problem_response(500, "internal_error", "internal server error")


def _leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:  # FastAPI keeps an included router as one node
            yield from _leaf_routes(inner.routes)
        else:
            yield route


def allowed_methods(request: Request) -> list[str]:
    """The methods of the resource a path names: those of every route with the path template
    of the first route matching it (routing order). Starlette's 405 names only that first
    route's methods, while a resource may be served by several routes (GET and DELETE)."""
    routes = list(_leaf_routes(request.app.router.routes))
    template = next(
        (
            getattr(route, "path", None)
            for route in routes
            if route.matches(request.scope)[0] is not Match.NONE
        ),
        None,
    )
    methods: set[str] = set()
    for route in routes:
        if template is not None and getattr(route, "path", None) == template:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.code, exc.detail, exc.headers, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return problem_response(
            400,
            "invalid_request",
            "the request does not match the schema",
            extra={"errors": errors},
        )

    @app.exception_handler(DecodeError)
    async def _decode(_: Request, exc: DecodeError) -> JSONResponse:
        return problem_response(400, "malformed_mls", f"malformed MLS data: {exc}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else ""
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return problem_response(exc.status_code, code, detail, headers)

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # A concurrent request won a uniqueness race the code did not anticipate; the
        # transaction was rolled back, so the client may simply retry.
        log.warning("integrity conflict: %s", type(exc.orig).__name__)
        return problem_response(409, "conflict", "a concurrent change conflicted; retry")

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeoutError)
    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc)


def problem_responses(*codes: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json answers of a route."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, code in codes:
        entry = out.setdefault(
            status,
            {
                "description": "",
                "content": {
                    PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            },
        )
        entry["description"] = (entry["description"] + ", " if entry["description"] else "") + code
    return out
