"""HTTP routes for connections and direct messages between connected users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..deps import PrincipalDep, ServicesDep, mls_body, mls_request_body
from ..errors import Problem, problem_responses
from ..group_key_wrap import GroupKeyWrap

router = APIRouter(tags=["connections"])

_AUTH = problem_responses((401, "unauthenticated"), (401, "token_expired"))


class OpenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    to: str = Field(..., max_length=320, description="user id of the responder")


class ConnectionOut(BaseModel):
    connection_id: str
    requester: str
    responder: str
    state: str
    created_at: int
    updated_at: int


class ConnectionsOut(BaseModel):
    connections: list[ConnectionOut]
    next_cursor: str | None = None


@router.post(
    "/v1/connections",
    status_code=201,
    response_model=ConnectionOut,
    responses={
        **_AUTH,
        **problem_responses(
            (404, "user_not_found"),
            (409, "connection_exists"),
            (422, "invalid_target"),
            (403, "federation_refused"),
            (502, "federation_unavailable"),
        ),
    },
)
async def open_connection(body: OpenIn, p: PrincipalDep, s: ServicesDep) -> ConnectionOut:
    """Open a connection request (state `opening`): allows one claim of the responder's KeyPackages."""
    c = await s.connections.open(p, body.to)
    return ConnectionOut.model_validate(c.to_json())


@router.post(
    "/v1/connections/{connection_id}/request",
    response_model=ConnectionOut,
    openapi_extra=mls_request_body("opaque payload for the responder (e.g. a Welcome)"),
    responses={
        **_AUTH,
        **problem_responses(
            (404, "connection_not_found"),
            (409, "invalid_state"),
            (413, "body_too_large"),
            (422, "invalid_group_key"),
        ),
    },
)
async def send_request(
    connection_id: str,
    request: Request,
    p: PrincipalDep,
    s: ServicesDep,
    group_key_wrap: GroupKeyWrap,
) -> ConnectionOut:
    """Send the request: it lands in the responder's direct queue (state `pending`)."""
    payload = await mls_body(request, max_bytes=s.config.limits.max_message_bytes)
    c = await s.connections.send_request(p, connection_id, payload, group_key_wrap)
    return ConnectionOut.model_validate(c.to_json())


async def _answer(
    connection_id: str, request: Request, p: PrincipalDep, s: ServicesDep, accept: bool
) -> ConnectionOut:
    payload = await mls_body(request, required=False, max_bytes=s.config.limits.max_message_bytes)
    c = await s.connections.answer(p, connection_id, accept, payload or None)
    return ConnectionOut.model_validate(c.to_json())


_ANSWER_ERRORS = {
    **_AUTH,
    **problem_responses((404, "connection_not_found"), (409, "invalid_state")),
}


@router.post(
    "/v1/connections/{connection_id}/accept",
    response_model=ConnectionOut,
    openapi_extra=mls_request_body("optional opaque payload for the requester", required=False),
    responses=_ANSWER_ERRORS,
)
async def accept(
    connection_id: str, request: Request, p: PrincipalDep, s: ServicesDep
) -> ConnectionOut:
    """Accept a pending request; the requester is told in its direct queue."""
    return await _answer(connection_id, request, p, s, True)


@router.post(
    "/v1/connections/{connection_id}/reject",
    response_model=ConnectionOut,
    openapi_extra=mls_request_body("optional opaque payload for the requester", required=False),
    responses=_ANSWER_ERRORS,
)
async def reject(
    connection_id: str, request: Request, p: PrincipalDep, s: ServicesDep
) -> ConnectionOut:
    """Reject a pending request; the requester is told in its direct queue."""
    return await _answer(connection_id, request, p, s, False)


@router.get(
    "/v1/connections",
    response_model=ConnectionsOut,
    responses={**_AUTH, **problem_responses((400, "invalid_request"))},
)
async def list_connections(
    p: PrincipalDep,
    s: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    # A cursor is the `next_cursor` of the previous page: "<created_at>:<connection id (UUID)>";
    # at most 18 digits of time, so that it fits the database's signed 64-bit integer.
    cursor: Annotated[
        str | None, Query(max_length=64, pattern=r"^[0-9]{1,18}:[0-9A-Za-z-]{1,36}$")
    ] = None,
) -> ConnectionsOut:
    """The caller's connections in either direction, oldest first, paginated by cursor."""
    limit = min(limit, s.config.limits.max_list_length)
    after = None
    if cursor is not None:
        created, _, cid = cursor.partition(":")
        if not created.isdigit() or not cid:
            raise Problem(400, "invalid_request", "invalid cursor")
        after = (int(created), cid)
    found = await s.connections.list_for(p, limit + 1, after)
    more = len(found) > limit
    found = found[:limit]
    last = found[-1] if found else None
    return ConnectionsOut(
        connections=[ConnectionOut.model_validate(c.to_json()) for c in found],
        next_cursor=f"{last.created_at}:{last.id}" if more and last else None,
    )


@router.post(
    "/v1/users/{user_id}/direct",
    status_code=202,
    response_class=Response,
    openapi_extra=mls_request_body("opaque MLS message (e.g. a Welcome) for the user"),
    responses={
        **_AUTH,
        **problem_responses(
            (404, "user_not_found"), (403, "no_connection"), (413, "body_too_large")
        ),
    },
)
async def send_direct(user_id: str, request: Request, p: PrincipalDep, s: ServicesDep) -> Response:
    """Deliver a message to a connected user's direct queue."""
    payload = await mls_body(request, max_bytes=s.config.limits.max_message_bytes)
    await s.connections.send_direct(p, user_id, payload)
    return Response(status_code=202)
