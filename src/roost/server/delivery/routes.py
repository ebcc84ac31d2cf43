"""HTTP routes of the Delivery Service (docs/api.md "Groups"). Thin: parse, call the service."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..deps import PrincipalDep, ServicesDep, binary_response, mls_body, mls_request_body
from ..encoding import MLS_MEDIA_TYPE, b64u, unb64u
from ..errors import Problem, problem_responses
from ..queues.service import QUEUE_ID_LEN
from .tables import GROUP_ID_MAX

router = APIRouter(tags=["groups"])

_AUTH = problem_responses((401, "unauthenticated"), (401, "token_expired"))
_GROUP = {**_AUTH, **problem_responses((404, "group_not_found"), (403, "not_member"))}
_MLS_ERRORS = problem_responses((400, "malformed_mls"), (415, "unsupported_media_type"))


class GroupOut(BaseModel):
    group_id: str
    cipher_suite: int
    epoch: int
    group_seq: int
    external_join: bool
    roles: dict[str, str]
    my_leaf: int | None


class GroupList(BaseModel):
    groups: list[GroupOut]


class CommitOut(BaseModel):
    epoch: int
    group_seq: int


class SeqOut(BaseModel):
    group_seq: int


class ExternalSenderOut(BaseModel):
    cipher_suite: int
    signature_key: str
    credential: list[str]
    external_sender: str


class QueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue_id: str


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "member"]


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_join: bool


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str | None = Field(..., min_length=1, max_length=64)


def _group_id(text: str) -> bytes:
    try:
        raw = unb64u(text)
    except ValueError:
        raw = b""
    if not raw or len(raw) > GROUP_ID_MAX:
        raise Problem(404, "group_not_found", "no such group")
    return raw


def _queue_id(text: str) -> bytes:
    try:
        raw = unb64u(text)
    except ValueError:
        raw = b""
    if len(raw) != QUEUE_ID_LEN:
        raise Problem(404, "queue_not_found", "no such queue")
    return raw


def _out(view) -> GroupOut:  # type: ignore[no-untyped-def]
    return GroupOut(**view.to_json())


@router.get(
    "/v1/ds/external-sender",
    response_model=ExternalSenderOut,
    responses=problem_responses((422, "unsupported_cipher_suite")),
)
async def external_sender(
    s: ServicesDep, cipher_suite: Annotated[int, Query(ge=1, le=0xFFFF)] = 1
) -> ExternalSenderOut:
    """The homeserver's external-sender entry for the group's `external_senders` extension."""
    key = await s.delivery.external_sender(cipher_suite)
    return ExternalSenderOut(
        cipher_suite=cipher_suite,
        signature_key=b64u(key.public_key),
        credential=[b64u(c) for c in key.credential.certificates],
        external_sender=b64u(key.external_sender.encode()),
    )


@router.post(
    "/v1/groups",
    status_code=201,
    response_model=GroupOut,
    openapi_extra=mls_request_body("RoostGroupState: epoch-0 GroupInfo MLSMessage + ratchet tree"),
    responses={
        **_AUTH,
        **_MLS_ERRORS,
        **problem_responses(
            (409, "group_exists"),
            (422, "invalid_group_id"),
            (422, "invalid_group"),
            (422, "missing_external_sender"),
            (422, "credential_mismatch"),
            (404, "queue_not_found"),
            (403, "forbidden"),
        ),
    },
)
async def create_group(
    request: Request,
    p: PrincipalDep,
    s: ServicesDep,
    queue_id: Annotated[str, Query()],
    external_join: bool = False,
) -> GroupOut:
    """Create a group from its epoch-0 GroupInfo and tree; the caller's user becomes admin."""
    qid = _queue_id(queue_id)
    body = await mls_body(request)
    return _out(await s.delivery.create_group(p, body, qid, external_join))


@router.get("/v1/groups", response_model=GroupList, responses=_AUTH)
async def list_groups(p: PrincipalDep, s: ServicesDep) -> GroupList:
    """Groups in which the calling client holds a leaf."""
    return GroupList(groups=[_out(v) for v in await s.delivery.list_groups(p)])


@router.get("/v1/groups/{group_id}", response_model=GroupOut, responses=_GROUP)
async def get_group(group_id: str, p: PrincipalDep, s: ServicesDep) -> GroupOut:
    """The group's epoch, order position, settings and roles (members only)."""
    return _out(await s.delivery.get_group(p, _group_id(group_id)))


@router.patch(
    "/v1/groups/{group_id}",
    response_model=GroupOut,
    responses={**_GROUP, **problem_responses((403, "role_required"))},
)
async def update_group(
    group_id: str, body: SettingsIn, p: PrincipalDep, s: ServicesDep
) -> GroupOut:
    """Admin: allow or forbid external joins."""
    return _out(await s.delivery.update_settings(p, _group_id(group_id), body.external_join))


@router.delete(
    "/v1/groups/{group_id}",
    status_code=204,
    response_class=Response,
    responses={**_GROUP, **problem_responses((403, "role_required"))},
)
async def delete_group(group_id: str, p: PrincipalDep, s: ServicesDep) -> Response:
    """Admin: delete the group; every member is sent a signed group_deleted notice."""
    await s.delivery.delete_group(p, _group_id(group_id))
    return Response(status_code=204)


@router.post(
    "/v1/groups/{group_id}/commits",
    status_code=201,
    response_model=CommitOut,
    openapi_extra=mls_request_body("RoostCommitBundle: commit, GroupInfo, optional Welcome"),
    responses={
        **_GROUP,
        **_MLS_ERRORS,
        **problem_responses(
            (409, "epoch_conflict"),
            (403, "role_required"),
            (403, "no_connection"),
            (403, "external_join_disabled"),
            (422, "invalid_commit"),
            (422, "invalid_group_info"),
            (422, "welcome_required"),
            (422, "unexpected_welcome"),
            (422, "queue_required"),
            (422, "wrong_wire_format"),
            (422, "credential_mismatch"),
        ),
    },
)
async def submit_commit(
    group_id: str,
    request: Request,
    p: PrincipalDep,
    s: ServicesDep,
    queue_id: str | None = None,
) -> CommitOut:
    """Submit a PublicMessage commit with its GroupInfo (and Welcome); first one per epoch wins."""
    gid = _group_id(group_id)
    qid = _queue_id(queue_id) if queue_id is not None else None
    body = await mls_body(request)
    epoch, seq = await s.delivery.submit_commit(p, gid, body, qid)
    return CommitOut(epoch=epoch, group_seq=seq)


@router.get(
    "/v1/groups/{group_id}/group-info",
    response_class=Response,
    responses={200: binary_response(MLS_MEDIA_TYPE, "RoostGroupState"), **_GROUP},
)
async def group_info(group_id: str, p: PrincipalDep, s: ServicesDep) -> Response:
    """Latest GroupInfo and the full ratchet tree (members, or anyone if external joins are on)."""
    return Response(await s.delivery.group_state(p, _group_id(group_id)), media_type=MLS_MEDIA_TYPE)


@router.put(
    "/v1/groups/{group_id}/queue",
    status_code=204,
    response_class=Response,
    responses={**_GROUP, **problem_responses((404, "queue_not_found"), (403, "forbidden"))},
)
async def register_queue(group_id: str, body: QueueIn, p: PrincipalDep, s: ServicesDep) -> Response:
    """Register the caller's leaf's queue; held messages move into it in group order."""
    await s.delivery.register_queue(p, _group_id(group_id), _queue_id(body.queue_id))
    return Response(status_code=204)


@router.post(
    "/v1/groups/{group_id}/messages",
    status_code=201,
    response_model=SeqOut,
    openapi_extra=mls_request_body("an application PrivateMessage"),
    responses={
        **_GROUP,
        **_MLS_ERRORS,
        **problem_responses(
            (409, "epoch_conflict"),
            (409, "epoch_too_old"),
            (422, "wrong_wire_format"),
            (422, "wrong_group"),
            (413, "body_too_large"),
        ),
    },
)
async def send_message(
    group_id: str,
    request: Request,
    p: PrincipalDep,
    s: ServicesDep,
    roost_message_id: Annotated[str, Header(min_length=1, max_length=128)],
) -> SeqOut:
    """Send an application message; idempotent per (client, Roost-Message-Id)."""
    gid = _group_id(group_id)
    body = await mls_body(request, max_bytes=s.config.limits.max_message_bytes)
    return SeqOut(group_seq=await s.delivery.send(p, gid, roost_message_id, body))


@router.post(
    "/v1/groups/{group_id}/proposals",
    status_code=201,
    response_model=SeqOut,
    openapi_extra=mls_request_body("a PublicMessage proposal"),
    responses={
        **_GROUP,
        **_MLS_ERRORS,
        **problem_responses(
            (409, "epoch_conflict"),
            (403, "role_required"),
            (422, "invalid_proposal"),
            (422, "wrong_wire_format"),
        ),
    },
)
async def submit_proposal(
    group_id: str, request: Request, p: PrincipalDep, s: ServicesDep
) -> SeqOut:
    """A standalone proposal (e.g. Remove of one's own leaf to leave), fanned out in order."""
    gid = _group_id(group_id)
    body = await mls_body(request)
    return SeqOut(group_seq=await s.delivery.submit_proposal(p, gid, body))


@router.put(
    "/v1/groups/{group_id}/roles/{user_id}",
    status_code=204,
    response_class=Response,
    responses={
        **_GROUP,
        **problem_responses((403, "role_required"), (404, "user_not_member")),
    },
)
async def set_role(
    group_id: str, user_id: str, body: RoleIn, p: PrincipalDep, s: ServicesDep
) -> Response:
    """Admin: make a member user admin or plain member."""
    await s.delivery.set_role(p, _group_id(group_id), user_id.strip().lower(), body.role)
    return Response(status_code=204)


@router.put(
    "/v1/groups/{group_id}/policy", status_code=204, response_class=Response, responses=_GROUP
)
async def set_policy(group_id: str, body: PolicyIn, p: PrincipalDep, s: ServicesDep) -> Response:
    """The calling client's notification policy for the group (attached to its queue items)."""
    await s.delivery.set_policy(p, _group_id(group_id), body.policy)
    return Response(status_code=204)
