"""``/health`` (liveness), ``/ready`` (database reachable, schema current) and ``/metrics``."""

from __future__ import annotations

import functools
import hmac
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import Problem, problem_responses
from ..store.migrate import MigrationError, check_schema, head_revision

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    summary="Liveness",
    description="200 while the process serves requests; touches nothing else (no database).",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/ready",
    summary="Readiness",
    description="200 when the database answers and its schema is at this version's head "
    "revision; 503 `not_ready` (problem+json) otherwise. Point load balancers here.",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready"}}}},
        **problem_responses((503, "not_ready")),
    },
)
async def ready(request: Request) -> JSONResponse:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise Problem(503, "not_ready", "the server is starting")
    db = services.auth.db
    try:
        # Two tiny queries per probe; the full check (which reads the migration scripts) runs
        # only to explain a mismatch.
        async with db.engine.connect() as conn:
            versions = [r[0] for r in await conn.execute(sa.text(_VERSION_SQL))]
            in_progress = (await conn.execute(sa.text(_LOCK_SQL))).scalar_one()
    except Exception as e:
        raise Problem(503, "not_ready", f"database unreachable ({type(e).__name__})") from None
    if versions != [_head()] or in_progress:
        try:
            await check_schema(db)
            detail = "the schema is changing"
        except MigrationError as e:
            detail = str(e)
        raise Problem(503, "not_ready", detail)
    return JSONResponse({"status": "ready", "database": "ok", "schema": "current"})


_VERSION_SQL = "SELECT version_num FROM alembic_version"
_LOCK_SQL = "SELECT count(*) FROM roost_migration_lock"


@functools.cache
def _head() -> str:
    return head_revision()


METRICS_DESCRIPTION = (
    "Prometheus text exposition format. If `metrics_token` is configured, requires "
    "`Authorization: Bearer <metrics_token>` (401 `unauthenticated` otherwise)."
)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description=METRICS_DESCRIPTION,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **problem_responses((401, "unauthenticated")),
    },
)
async def metrics(request: Request) -> Response:
    state: Any = request.app.state
    token = state.services.config.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise Problem(
                401,
                "unauthenticated",
                "the metrics token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
    m = state.metrics
    await m.refresh(state.services, getattr(state, "notify", None), getattr(state, "push", None))
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)
