"""Inbound ``/federation/v1/`` routes of the AS: discovery, connection opening, KeyPackage
claims for users of this server asked for by other servers (docs/federation.md, "AS flows").

Every route requires a verified signed request (``FederationOrigin``); what the origin says about
a user is accepted only for users of the origin's own domain.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from roost.protocol.key_package_batch import join_mls_vector
from roost.protocol.media_types import MLS_MEDIA_TYPE

from ..auth import ids
from ..auth.schemas import (
    ClientsOut,
    DirectoryCursor,
    DirectoryLimit,
    DirectoryOut,
    DirectoryQuery,
    UserOut,
    client_out,
    user_out,
)
from ..auth.service import UserInfo
from ..deps import ServicesDep
from ..errors import Problem, problem_responses
from .as_flows import speaks_for
from .inbound import SIGNED_REQUEST_ERRORS, FederationOrigin

router = APIRouter(tags=["federation"])

_SIGNED = SIGNED_REQUEST_ERRORS


async def _local_user(s: ServicesDep, user_id: str) -> UserInfo:
    user = await s.auth.find_user(user_id)
    if user is None:
        raise Problem(404, "user_not_found", f"no user {user_id}")
    return user


@router.get(
    "/federation/v1/users/{user_id}",
    response_model=UserOut,
    responses={**_SIGNED, **problem_responses((404, "user_not_found"))},
)
async def fed_lookup_user(user_id: str, _origin: FederationOrigin, s: ServicesDep) -> UserOut:
    """A user of this server, for another server's client (same shape as `/v1/users/{id}`)."""
    return user_out(s.auth.public_user(await _local_user(s, user_id)))


@router.get(
    "/federation/v1/users/{user_id}/clients",
    response_model=ClientsOut,
    responses={**_SIGNED, **problem_responses((404, "user_not_found"))},
)
async def fed_user_clients(user_id: str, _origin: FederationOrigin, s: ServicesDep) -> ClientsOut:
    """A user's clients and their credentials (chains to this server's AS certificate)."""
    user = await _local_user(s, user_id)
    clients = await s.auth.list_clients(user.uuid)
    return ClientsOut(clients=[client_out(s.auth.public_client(c)) for c in clients])


@router.get("/federation/v1/directory", response_model=DirectoryOut, responses=_SIGNED)
async def fed_directory(
    _origin: FederationOrigin,
    s: ServicesDep,
    q: DirectoryQuery,
    limit: DirectoryLimit = 20,
    cursor: DirectoryCursor = None,
) -> DirectoryOut:
    """This server's opt-in directory search for another server's user: the same rule, limits
    and cursor as `GET /v1/directory` (only users who opted in are listed)."""
    found, next_cursor = await s.auth.search_directory_page(q, limit, cursor)
    return DirectoryOut(users=[user_out(u) for u in found], next_cursor=next_cursor)


class FedOpenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    connection_id: str = Field(..., max_length=36)
    requester: str = Field(..., max_length=320)
    requester_uuid: str = Field(..., max_length=36)
    responder: str = Field(..., max_length=320)


class FedOpenOut(BaseModel):
    connection_id: str
    responder: str
    responder_uuid: str


@router.post(
    "/federation/v1/connections",
    status_code=201,
    response_model=FedOpenOut,
    responses={
        **_SIGNED,
        **problem_responses(
            (400, "invalid_request"),
            (403, "forbidden"),
            (404, "user_not_found"),
            (409, "connection_exists"),
        ),
    },
)
async def fed_open_connection(
    body: FedOpenIn, origin: FederationOrigin, s: ServicesDep
) -> FedOpenOut:
    """A user of the origin opens a connection to a user of ours (state `opening`, with the
    requester's one KeyPackage claim). Idempotent for the same connection id."""
    requester = speaks_for(origin, body.requester)
    if not ids.is_uuid(body.connection_id) or not ids.is_uuid(body.requester_uuid):
        raise Problem(400, "invalid_request", "connection_id and requester_uuid must be UUIDs")
    target = await _local_user(s, body.responder)
    requester_uuid = body.requester_uuid.lower()
    async with s.connections.db.engine.connect() as conn:
        await s.connections.check_remote_uuid(conn, requester_uuid, requester)
    c = await s.connections.record_open(
        body.connection_id.lower(), requester_uuid, requester, target.uuid, target.user_id
    )
    return FedOpenOut(connection_id=c.id, responder=target.user_id, responder_uuid=target.uuid)


@router.post(
    "/federation/v1/users/{user_id}/keypackages/claim",
    response_class=Response,
    responses={
        **_SIGNED,
        **problem_responses(
            (403, "forbidden"),
            (403, "no_connection"),
            (404, "user_not_found"),
            (429, "rate_limited"),
        ),
    },
)
async def fed_claim(
    user_id: str,
    origin: FederationOrigin,
    s: ServicesDep,
    roost_client: Annotated[str, Header(max_length=400)],
    cipher_suite: Annotated[int, Query(ge=0, le=65535)] = 1,
) -> Response:
    """A remote user's claim of one KeyPackage per client of a user of ours: our claim rule
    applies to the requester as our connection rows know them (same bytes as a local claim)."""
    return await _fed_claim(user_id, None, origin, s, roost_client, cipher_suite)


@router.post(
    "/federation/v1/users/{user_id}/clients/{client_uuid}/keypackages/claim",
    response_class=Response,
    responses={
        **_SIGNED,
        **problem_responses(
            (403, "forbidden"),
            (403, "no_connection"),
            (404, "user_not_found"),
            (404, "client_not_found"),
            (429, "rate_limited"),
        ),
    },
)
async def fed_claim_client(
    user_id: str,
    client_uuid: str,
    origin: FederationOrigin,
    s: ServicesDep,
    roost_client: Annotated[str, Header(max_length=400)],
    cipher_suite: Annotated[int, Query(ge=0, le=65535)] = 1,
) -> Response:
    """A remote user's claim of one KeyPackage of one client of a user of ours (same rule)."""
    return await _fed_claim(user_id, client_uuid, origin, s, roost_client, cipher_suite)


async def _fed_claim(
    user_id: str,
    client_uuid: str | None,
    origin: str,
    s: ServicesDep,
    roost_client: str,
    cipher_suite: int,
) -> Response:
    parsed = ids.parse_client_id(roost_client)
    if parsed is None:
        raise Problem(403, "forbidden", "Roost-Client must be a client id of the origin")
    requester = speaks_for(origin, ids.user_id(parsed[0], parsed[1]))
    s.claim_limiter.hit(f"fed:{requester}")
    target = await _local_user(s, user_id)
    async with s.connections.db.engine.connect() as conn:
        requester_uuid = await s.connections.remote_user_uuid(conn, requester)
    if requester_uuid is None:
        raise Problem(403, "no_connection", "KeyPackages are only given to connected users")
    only = client_uuid.strip().lower() if client_uuid is not None else None
    items = await s.keypackages.claim(requester_uuid, target.uuid, cipher_suite, only_client=only)
    return Response(join_mls_vector(items), media_type=MLS_MEDIA_TYPE)
