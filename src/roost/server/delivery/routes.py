"""HTTP routes of the Delivery Service (docs/api.md "Groups"). Thin: parse, call the service.

The 10 routes on one group are defined once, in ``group_routes``, parametrised by who the
caller is (a dependency yielding the principal) and the path prefix: this module mounts them
for local clients at ``/v1/groups/{group_id}``, ``federation/routes_ds.py`` for clients of
other domains at ``/federation/v1/groups/{group_id}``. Each surface brings its own OpenAPI
documentation (``RouteDoc``: errors and description per route).

``POST .../messages`` is served by the raw-ASGI fast path (``fastpath.py``) for local clients;
the route here is declared for the OpenAPI document and answers alike (both parse with
``sends.parse_send``; ``tests/server/test_delivery_send_route.py`` compares them).
"""

# No ``from __future__ import annotations`` here: the handlers inside ``group_routes`` annotate
# their principal with the factory's argument, which FastAPI must see as an object.

from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES
from roost.protocol.base64url import b64u
from roost.protocol.media_types import MLS_MEDIA_TYPE
from roost.protocol.user_id import canonical_user_id

from ..deps import PrincipalDep, ServicesDep, binary_response, mls_body, mls_request_body
from ..errors import problem_responses
from ..group_key_wrap import GroupKeyWrap
from ..queues.params import QueueKey, queue_id_param
from .group_info_check import GROUP_INFO_EXTENSION_PROBLEMS
from .group_key import GroupKey
from .group_store import GroupView
from .path_params import group_id_param
from .sends import MESSAGE_ID_MAX, parse_send

_AUTH = problem_responses((401, "unauthenticated"), (401, "token_expired"))
_GROUP = {
    **_AUTH,
    **problem_responses(
        (404, "group_not_found"),
        (403, "not_member"),
        (403, "group_key_required"),
        (403, "wrong_group_key"),
        (422, "invalid_group_key"),
    ),
}
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
    model_config = ConfigDict(extra="forbid", strict=True)
    queue_id: str


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["admin", "member"]


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    external_join: bool


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    policy: str | None = Field(..., min_length=1, max_length=64)


def _out(view: GroupView) -> GroupOut:
    return GroupOut.model_validate(view.to_json())


# ---- the routes on one group, for any kind of caller --------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """How one surface documents a route: its error answers and its description."""

    responses: dict[int | str, dict[str, Any]]
    description: str = ""


_MESSAGE_ID_HEADER = {
    "in": "header",
    "name": "roost-message-id",
    "required": True,
    "schema": {
        "maxLength": MESSAGE_ID_MAX,
        "minLength": 1,
        "title": "Roost-Message-Id",
        "type": "string",
    },
}

GROUP_ROUTES = (
    "get_group",
    "update_group",
    "delete_group",
    "submit_commit",
    "group_info",
    "register_queue",
    "send_message",
    "submit_proposal",
    "set_role",
    "set_policy",
)


def group_routes(
    principal: Any, prefix: str, *, tag: str, name_prefix: str, docs: dict[str, RouteDoc]
) -> APIRouter:
    """The routes on one group (``prefix`` ends in ``{group_id}``); ``principal`` is the
    annotated dependency that authenticates the caller; ``docs`` documents each route."""
    router = APIRouter()

    def add(name: str, suffix: str, endpoint: Any, method: str, **kw: Any) -> None:
        doc = docs[name]
        router.add_api_route(
            prefix + suffix,
            endpoint,
            methods=[method],
            name=name_prefix + name,
            responses=doc.responses,
            description=doc.description,
            tags=[tag],
            **kw,
        )

    async def get_group(group_id: str, p: principal, s: ServicesDep, key: GroupKey) -> GroupOut:
        return _out(await s.delivery.get_group(p, group_id_param(group_id), key))

    async def update_group(
        group_id: str, body: SettingsIn, p: principal, s: ServicesDep, key: GroupKey
    ) -> GroupOut:
        return _out(
            await s.delivery.update_settings(p, group_id_param(group_id), body.external_join, key)
        )

    async def delete_group(group_id: str, p: principal, s: ServicesDep, key: GroupKey) -> Response:
        await s.delivery.delete_group(p, group_id_param(group_id), key)
        return Response(status_code=204)

    async def submit_commit(
        group_id: str,
        request: Request,
        p: principal,
        s: ServicesDep,
        queue_key: QueueKey,
        key: GroupKey,
        key_wrap: GroupKeyWrap,
        queue_id: str | None = None,
    ) -> CommitOut:
        gid = group_id_param(group_id)
        qid = queue_id_param(queue_id) if queue_id is not None else None
        body = await mls_body(request)
        epoch, seq = await s.delivery.submit_commit(p, gid, body, qid, queue_key, key, key_wrap)
        return CommitOut(epoch=epoch, group_seq=seq)

    async def group_info(group_id: str, p: principal, s: ServicesDep, key: GroupKey) -> Response:
        state = await s.delivery.group_state(p, group_id_param(group_id), key)
        return Response(state, media_type=MLS_MEDIA_TYPE)

    async def register_queue(
        group_id: str,
        body: QueueIn,
        queue_key: QueueKey,
        p: principal,
        s: ServicesDep,
        key: GroupKey,
    ) -> Response:
        gid = group_id_param(group_id)
        await s.delivery.register_queue(p, gid, queue_id_param(body.queue_id), queue_key, key)
        return Response(status_code=204)

    async def send_message(
        group_id: str, request: Request, p: principal, s: ServicesDep, key: GroupKey
    ) -> SeqOut:
        # The Roost-Message-Id header is documented below and checked by parse_send, as on
        # the fast path (FastAPI's own validation would answer differently).
        send = parse_send(
            group_id,
            request.headers.get("roost-message-id"),
            request.headers.get("content-type"),
            await request.body(),
            s.config.limits.max_message_bytes,
        )
        seq = await s.delivery.send(p, send.group_id, send.message_id, send.body, key)
        return SeqOut(group_seq=seq)

    async def submit_proposal(
        group_id: str, request: Request, p: principal, s: ServicesDep, key: GroupKey
    ) -> SeqOut:
        gid = group_id_param(group_id)
        body = await mls_body(request)
        return SeqOut(group_seq=await s.delivery.submit_proposal(p, gid, body, key))

    async def set_role(
        group_id: str, user_id: str, body: RoleIn, p: principal, s: ServicesDep, key: GroupKey
    ) -> Response:
        uid = canonical_user_id(user_id)
        await s.delivery.set_role(p, group_id_param(group_id), uid, body.role, key)
        return Response(status_code=204)

    async def set_policy(
        group_id: str, body: PolicyIn, p: principal, s: ServicesDep, key: GroupKey
    ) -> Response:
        await s.delivery.set_policy(p, group_id_param(group_id), body.policy, key)
        return Response(status_code=204)

    commit_body = mls_request_body("RoostCommitBundle: commit, GroupInfo, optional Welcome")
    add("get_group", "", get_group, "GET", response_model=GroupOut)
    add("update_group", "", update_group, "PATCH", response_model=GroupOut)
    add("delete_group", "", delete_group, "DELETE", status_code=204, response_class=Response)
    add(
        "submit_commit",
        "/commits",
        submit_commit,
        "POST",
        status_code=201,
        response_model=CommitOut,
        openapi_extra=commit_body,
    )
    add("group_info", "/group-info", group_info, "GET", response_class=Response)
    add("register_queue", "/queue", register_queue, "PUT", status_code=204, response_class=Response)
    add(
        "send_message",
        "/messages",
        send_message,
        "POST",
        status_code=201,
        response_model=SeqOut,
        openapi_extra={
            **mls_request_body("an application PrivateMessage"),
            "parameters": [_MESSAGE_ID_HEADER],
        },
    )
    add(
        "submit_proposal",
        "/proposals",
        submit_proposal,
        "POST",
        status_code=201,
        response_model=SeqOut,
        openapi_extra=mls_request_body("a PublicMessage proposal"),
    )
    add("set_role", "/roles/{user_id}", set_role, "PUT", status_code=204, response_class=Response)
    add("set_policy", "/policy", set_policy, "PUT", status_code=204, response_class=Response)
    return router


# ---- local clients -------------------------------------------------------------------------------

# Tags per route: the included group routes carry their own.
router = APIRouter()
_TAGS: list[str | Enum] = ["groups"]


@router.get(
    "/v1/ds/external-sender",
    tags=_TAGS,
    response_model=ExternalSenderOut,
    responses=problem_responses((422, "unsupported_cipher_suite")),
)
async def external_sender(
    s: ServicesDep,
    # Any suite number parses (422 unsupported_cipher_suite beyond these); the document lists
    # the ones served, so a client (or a generator) knows what it may ask for.
    cipher_suite: Annotated[
        int, Query(ge=1, le=0xFFFF, json_schema_extra={"enum": sorted(SUPPORTED_SUITES)})
    ] = 1,
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
    tags=_TAGS,
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
            *GROUP_INFO_EXTENSION_PROBLEMS,
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
    queue_key: QueueKey,
    group_key: GroupKey,
    external_join: bool = False,
) -> GroupOut:
    """Create a group from its epoch-0 GroupInfo and tree; the caller's user becomes admin.
    The caller's queue is named by ``queue_id`` and authorised by its Roost-Queue-Key."""
    qid = queue_id_param(queue_id)
    body = await mls_body(request)
    return _out(await s.delivery.create_group(p, body, qid, queue_key, external_join, group_key))


@router.get(
    "/v1/groups",
    tags=_TAGS,
    response_model=GroupList,
    responses={**_AUTH, **problem_responses((429, "rate_limited"))},
)
async def list_groups(p: PrincipalDep, s: ServicesDep) -> GroupList:
    """Groups in which the calling client holds a leaf. No stored column names a leaf's
    client, so answering opens every member row: rate-limited per client
    (`limits.group_lists_per_minute`); clients keep their own list of groups."""
    s.group_list_limiter.hit(p.client_uuid)
    return GroupList(groups=[_out(v) for v in await s.delivery.list_groups(p)])


_ADMIN_ONLY = {**_GROUP, **problem_responses((403, "role_required"))}
CLIENT_DOCS = {
    "get_group": RouteDoc(
        _GROUP, "The group's epoch, order position, settings and roles (members only)."
    ),
    "update_group": RouteDoc(_ADMIN_ONLY, "Admin: allow or forbid external joins."),
    "delete_group": RouteDoc(
        _ADMIN_ONLY, "Admin: delete the group; every member is sent a signed group_deleted notice."
    ),
    "submit_commit": RouteDoc(
        {
            **_GROUP,
            **_MLS_ERRORS,
            **problem_responses(
                (409, "epoch_conflict"),
                (409, "items_in_transit"),
                (403, "role_required"),
                (403, "no_connection"),
                (403, "external_join_disabled"),
                (403, "not_own_leaf"),
                (422, "invalid_commit"),
                (422, "invalid_group_info"),
                *GROUP_INFO_EXTENSION_PROBLEMS,
                (422, "welcome_required"),
                (422, "unexpected_welcome"),
                (422, "queue_required"),
                (422, "wrong_wire_format"),
                (422, "credential_mismatch"),
            ),
        },
        "Submit a PublicMessage commit with its GroupInfo (and Welcome); first one per epoch wins."
        " A member may rejoin in place of its own leaf by external commit (resync).",
    ),
    "group_info": RouteDoc(
        {200: binary_response(MLS_MEDIA_TYPE, "RoostGroupState"), **_GROUP},
        "Latest GroupInfo and the full ratchet tree (members, or anyone if external joins are on).",
    ),
    "register_queue": RouteDoc(
        {**_GROUP, **problem_responses((404, "queue_not_found"), (403, "forbidden"))},
        "Register the caller's leaf's queue; held messages move into it in group order.",
    ),
    "send_message": RouteDoc(
        {
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
        "Send an application message; idempotent per (client, Roost-Message-Id).",
    ),
    "submit_proposal": RouteDoc(
        {
            **_GROUP,
            **_MLS_ERRORS,
            **problem_responses(
                (409, "epoch_conflict"),
                (403, "role_required"),
                (422, "invalid_proposal"),
                (422, "wrong_wire_format"),
            ),
        },
        "A standalone proposal (e.g. Remove of one's own leaf to leave), fanned out in order.",
    ),
    "set_role": RouteDoc(
        {
            **_GROUP,
            **problem_responses(
                (403, "role_required"), (404, "user_not_member"), (409, "last_admin")
            ),
        },
        "Admin: make a member user admin or plain member (the last admin cannot step down).",
    ),
    "set_policy": RouteDoc(
        _GROUP,
        "The calling client's notification policy for the group (attached to its queue items).",
    ),
}

# The routes themselves, not an included router: FastAPI would build each route a second time
# for an included router (at the first request), with nothing to add (no prefix, tags or
# dependencies at the inclusion).
router.routes.extend(
    group_routes(
        PrincipalDep, "/v1/groups/{group_id}", tag="groups", name_prefix="", docs=CLIENT_DOCS
    ).routes
)
