"""Account events across domains (docs/federation.md, "Account events across domains").

Sending: when the AS writes an account event (a client removed, an account deleted, a display
name changed), the same transaction queues an ``account.event`` outbox item for every other
domain the user has a connection with, so groups living there hear of it. Receiving: the item
goes into this server's own ``account_events`` outbox, and the Delivery Service handles it like
a local one (server Remove proposals for the gone leaves, notices to the members).
A server speaks only for its own users and their clients.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ..auth import ids
from ..errors import Problem
from ..store.async_engine import AsyncConnection
from ..store.engine import after_commit
from .as_flows import speaks_for
from .outbox import item_json
from .transport import FederationRefused

if TYPE_CHECKING:
    from ..deps import Services

log = logging.getLogger("roost.federation")

KIND = "account.event"
DISPLAY_NAME_MAX = 128  # as the client API allows (auth/routes.py)


def _invalid(detail: str) -> Problem:
    return Problem(400, "invalid_request", detail)


def _own_client_ids(value: Any, user_id: str) -> list[str]:
    """Client ids that all belong to ``user_id`` (normalised), else 400."""
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise _invalid("client ids must be a list of strings")
    out = []
    for text in value:
        parsed = ids.parse_client_id(text)
        if parsed is None or ids.user_id(parsed[0], parsed[1]) != user_id:
            raise _invalid("a client id is not one of the user's")
        out.append(ids.client_id(*parsed))
    return out


def parse_item(origin: str, body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(event_type, user_id, payload) of an ``account.event`` item from ``origin``: 403 when
    the user is not of ``origin``, 400 when the item is malformed."""
    d = item_json(body)
    if (
        not isinstance(d, dict)
        or not isinstance(d.get("event_type"), str)
        or not isinstance(d.get("user_id"), str)
        or not isinstance(d.get("payload"), dict)
    ):
        raise _invalid("the item needs event_type, user_id (strings) and payload (an object)")
    user_id = speaks_for(origin, d["user_id"])
    event_type, payload = d["event_type"], d["payload"]
    if event_type == "client_removed":
        [client_id] = _own_client_ids([payload.get("client_id")], user_id)
        return event_type, user_id, {"client_id": client_id}
    if event_type == "user_deleted":
        client_ids = _own_client_ids(payload.get("client_ids"), user_id)
        return event_type, user_id, {"user_id": user_id, "client_ids": client_ids}
    if event_type == "display_name_changed":
        name = payload.get("display_name")
        if name is not None and (not isinstance(name, str) or len(name) > DISPLAY_NAME_MAX):
            raise _invalid(f"display_name is a string of at most {DISPLAY_NAME_MAX} characters")
        return event_type, user_id, {"user_id": user_id, "display_name": name}
    raise _invalid(f"unknown account event type {event_type!r}")


def install_account_events(s: Services) -> None:
    """Forward this server's account events to the users' other domains; apply theirs."""
    fed = getattr(s, "federation", None)
    if fed is None:
        return

    async def forward(conn: AsyncConnection, event_type: str, user_id: str, payload: dict) -> None:
        # Read before the deletion hooks remove the connections (AuthService.delete_account).
        body = json.dumps(
            {"event_type": event_type, "user_id": user_id, "payload": payload}, sort_keys=True
        ).encode()
        for domain in await s.connections.remote_domains_of(conn, user_id):  # sorted
            try:
                await fed.outbox.enqueue_in(conn, domain, KIND, body)
            except FederationRefused:
                # The operator forgot the domain (a blocked one gets the event held): the
                # account change still happens.
                log.info("not telling %s of an account event: the operator forgot it", domain)

    async def receive(conn: AsyncConnection, origin: str, body: bytes) -> None:
        event_type, user_id, payload = parse_item(origin, body)
        # The Delivery Service finds leaves by client uuid: a remote server must not name one
        # of ours (uuids are random, so only a forgery collides).
        claimed = payload.get("client_ids") or [payload.get("client_id")]
        for client_id in filter(None, claimed):
            if await s.auth.get_client(client_id.rpartition("/")[2], conn) is not None:
                raise Problem(403, "forbidden", "a server speaks only for its own clients")
        await s.auth.record_remote_account_event(conn, event_type, user_id, payload)
        if event_type == "user_deleted":
            await s.connections.delete_remote_user_connections(conn, user_id)
        after_commit(conn, s.delivery.wake_events)

    s.auth.on_account_event.append(forward)
    fed.inbox.register(KIND, receive)
