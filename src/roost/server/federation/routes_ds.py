"""Inbound ``/federation/v1/groups/...`` routes: another server forwards its client's request
on a group of this DS (docs/federation.md, "DS flows").

The routes are the client routes' own (``delivery.routes.group_routes``), mounted here with a
``RemotePrincipal`` for the acting client (only a client of the verified origin's domain), so
roles, one commit per epoch, idempotent sends and policies hold alike. Answers are those of the
client routes; the forwarding server passes them back unchanged.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from roost.protocol.media_types import MLS_MEDIA_TYPE

from ..auth import ids
from ..delivery.federation_port import RemotePrincipal
from ..delivery.routes import RouteDoc, group_routes
from ..deps import ServicesDep, binary_response
from ..errors import Problem, problem_responses
from .as_flows import CLIENT_HEADER, USER_UUID_HEADER, check_remote_uuid
from .inbound import FederationOrigin

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

_CONFLICT = {**_GROUP, **problem_responses((409, "epoch_conflict"))}
FEDERATION_DOCS = {
    "get_group": RouteDoc(_GROUP, "`GET /v1/groups/{group_id}` for a client of the origin."),
    "update_group": RouteDoc(_GROUP),
    "delete_group": RouteDoc(_GROUP),
    "submit_commit": RouteDoc(
        {**_CONFLICT, **problem_responses((409, "items_in_transit"))},
        "A commit of the origin's client; a ``queue_id`` (external join) is on the origin's QS.",
    ),
    "group_info": RouteDoc({200: binary_response(MLS_MEDIA_TYPE, "RoostGroupState"), **_GROUP}),
    "register_queue": RouteDoc(
        _GROUP,
        "The member's queue on the origin's QS (the origin checked that its client owns it).",
    ),
    "send_message": RouteDoc(_CONFLICT),
    "submit_proposal": RouteDoc(_GROUP),
    "set_role": RouteDoc(_GROUP),
    "set_policy": RouteDoc(
        _GROUP,
        "The origin client's notification policy, attached to the items sent to its queue.",
    ),
}

router = group_routes(
    RemoteDep, _PREFIX, tag="federation", name_prefix="fed_", docs=FEDERATION_DOCS
)
