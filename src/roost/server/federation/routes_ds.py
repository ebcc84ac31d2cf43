"""Inbound ``/federation/v1/groups/...`` routes: another server forwards its client's request
on a group of this DS (docs/federation.md, "DS flows").

Each route builds a ``RemotePrincipal`` for the acting client (only a client of the verified
origin's domain) and calls the same ``DeliveryService`` method as the client route, so roles,
one commit per epoch, idempotent sends and policies hold alike. Answers are those of the
client routes; the forwarding server passes them back unchanged.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response

from ..auth import ids
from ..delivery.routes import (
    CommitOut,
    GroupOut,
    PolicyIn,
    QueueIn,
    RoleIn,
    SeqOut,
    SettingsIn,
    _group_id,
    _queue_id,
)
from ..delivery.service import RemotePrincipal
from ..deps import ServicesDep, binary_response, mls_body, mls_request_body
from ..encoding import MLS_MEDIA_TYPE
from ..errors import Problem, problem_responses
from .as_flows import CLIENT_HEADER, USER_UUID_HEADER, check_remote_uuid
from .inbound import FederationOrigin

router = APIRouter(tags=["federation"])

_SIGNED = problem_responses(
    (401, "invalid_signature"),
    (401, "replayed_request"),
    (403, "federation_refused"),
    (403, "forbidden"),
    (421, "wrong_destination"),
)
_GROUP = {**_SIGNED, **problem_responses((404, "group_not_found"), (403, "not_member"))}
_PREFIX = "/federation/v1/groups/{group_id}"


async def remote_principal(
    origin: FederationOrigin,
    s: ServicesDep,
    client_id: Annotated[str, Header(alias=CLIENT_HEADER, max_length=400)],
    user_uuid: Annotated[str, Header(alias=USER_UUID_HEADER, max_length=36)],
) -> RemotePrincipal:
    """The acting client of the origin server (a server speaks only for its own users)."""
    parsed = ids.parse_client_id(client_id)
    if parsed is None or parsed[1] != origin or not ids.is_uuid(user_uuid):
        raise Problem(403, "forbidden", "a server speaks only for its own clients")
    name, domain, client_uuid = parsed
    user_id = ids.user_id(name, domain)
    user_uuid = user_uuid.lower()
    async with s.delivery.db.engine.connect() as conn:
        await check_remote_uuid(s, conn, user_uuid, user_id)
        if await s.delivery.client_uuid_taken(conn, client_uuid, user_id):
            raise Problem(403, "forbidden", "the client id names another client")
    return RemotePrincipal(
        user_uuid=user_uuid,
        name=name,
        user_id=user_id,
        client_uuid=client_uuid,
        client_id=f"{user_id}/{client_uuid}",
        domain=origin,
    )


RemoteDep = Annotated[RemotePrincipal, Depends(remote_principal)]


@router.get(_PREFIX, response_model=GroupOut, responses=_GROUP)
async def fed_get_group(group_id: str, p: RemoteDep, s: ServicesDep) -> GroupOut:
    """`GET /v1/groups/{group_id}` for a client of the origin."""
    return GroupOut(**(await s.delivery.get_group(p, _group_id(group_id))).to_json())


@router.patch(_PREFIX, response_model=GroupOut, responses=_GROUP)
async def fed_update_group(
    group_id: str, body: SettingsIn, p: RemoteDep, s: ServicesDep
) -> GroupOut:
    view = await s.delivery.update_settings(p, _group_id(group_id), body.external_join)
    return GroupOut(**view.to_json())


@router.delete(_PREFIX, status_code=204, response_class=Response, responses=_GROUP)
async def fed_delete_group(group_id: str, p: RemoteDep, s: ServicesDep) -> Response:
    await s.delivery.delete_group(p, _group_id(group_id))
    return Response(status_code=204)


@router.post(
    _PREFIX + "/commits",
    status_code=201,
    response_model=CommitOut,
    openapi_extra=mls_request_body("RoostCommitBundle: commit, GroupInfo, optional Welcome"),
    responses={**_GROUP, **problem_responses((409, "epoch_conflict"))},
)
async def fed_submit_commit(
    group_id: str,
    request: Request,
    p: RemoteDep,
    s: ServicesDep,
    queue_id: str | None = None,
) -> CommitOut:
    """A commit of the origin's client; a ``queue_id`` (external join) is on the origin's QS."""
    gid = _group_id(group_id)
    qid = _queue_id(queue_id) if queue_id is not None else None
    epoch, seq = await s.delivery.submit_commit(p, gid, await mls_body(request), qid)
    return CommitOut(epoch=epoch, group_seq=seq)


@router.get(
    _PREFIX + "/group-info",
    response_class=Response,
    responses={200: binary_response(MLS_MEDIA_TYPE, "RoostGroupState"), **_GROUP},
)
async def fed_group_info(group_id: str, p: RemoteDep, s: ServicesDep) -> Response:
    state = await s.delivery.group_state(p, _group_id(group_id))
    return Response(state, media_type=MLS_MEDIA_TYPE)


@router.put(_PREFIX + "/queue", status_code=204, response_class=Response, responses=_GROUP)
async def fed_register_queue(
    group_id: str, body: QueueIn, p: RemoteDep, s: ServicesDep
) -> Response:
    """The member's queue on the origin's QS (the origin checked that its client owns it)."""
    await s.delivery.register_queue(p, _group_id(group_id), _queue_id(body.queue_id))
    return Response(status_code=204)


@router.post(
    _PREFIX + "/messages",
    status_code=201,
    response_model=SeqOut,
    openapi_extra=mls_request_body("an application PrivateMessage"),
    responses={**_GROUP, **problem_responses((409, "epoch_conflict"))},
)
async def fed_send_message(
    group_id: str,
    request: Request,
    p: RemoteDep,
    s: ServicesDep,
    roost_message_id: Annotated[str, Header(min_length=1, max_length=128)],
) -> SeqOut:
    gid = _group_id(group_id)
    body = await mls_body(request, max_bytes=s.config.limits.max_message_bytes)
    return SeqOut(group_seq=await s.delivery.send(p, gid, roost_message_id, body))


@router.post(
    _PREFIX + "/proposals",
    status_code=201,
    response_model=SeqOut,
    openapi_extra=mls_request_body("a PublicMessage proposal"),
    responses=_GROUP,
)
async def fed_submit_proposal(
    group_id: str, request: Request, p: RemoteDep, s: ServicesDep
) -> SeqOut:
    gid = _group_id(group_id)
    return SeqOut(group_seq=await s.delivery.submit_proposal(p, gid, await mls_body(request)))


@router.put(
    _PREFIX + "/roles/{user_id}", status_code=204, response_class=Response, responses=_GROUP
)
async def fed_set_role(
    group_id: str, user_id: str, body: RoleIn, p: RemoteDep, s: ServicesDep
) -> Response:
    await s.delivery.set_role(p, _group_id(group_id), user_id.strip().lower(), body.role)
    return Response(status_code=204)


@router.put(_PREFIX + "/policy", status_code=204, response_class=Response, responses=_GROUP)
async def fed_set_policy(group_id: str, body: PolicyIn, p: RemoteDep, s: ServicesDep) -> Response:
    """The origin client's notification policy, attached to the items sent to its queue."""
    await s.delivery.set_policy(p, _group_id(group_id), body.policy)
    return Response(status_code=204)
