"""Connections between users: opening -> pending -> accepted | rejected.

Events for either side go to the user's direct queue through the queue module's interface.
The claim rule (who may claim whose KeyPackages) lives here: ``authorize_claim``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from roost.protocol.base64url import b64u
from roost.protocol.user_id import canonical_user_id

from ..auth.service import AuthService, Principal
from ..errors import Problem
from ..group_key_wrap import wrap_field
from ..queues.service import QueueService
from ..store import Database
from ..store.async_engine import AsyncConnection
from .tables import connections


@dataclass(frozen=True, slots=True)
class Connection:
    id: str
    requester: str
    responder: str
    state: str
    created_at: int
    updated_at: int

    def to_json(self) -> dict[str, object]:
        return {
            "connection_id": self.id,
            "requester": self.requester,
            "responder": self.responder,
            "state": self.state,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _conn(row: sa.Row) -> Connection:
    return Connection(
        row.id, row.requester_id, row.responder_id, row.state, row.created_at, row.updated_at
    )


def open_pair(a: str, b: str) -> str:
    """The unique key of a pair of users while they have an open connection."""
    return f"{a}|{b}" if a < b else f"{b}|{a}"


def _between(a: str, b: str) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(connections.c.requester_uuid == a, connections.c.responder_uuid == b),
        sa.and_(connections.c.requester_uuid == b, connections.c.responder_uuid == a),
    )


class RemoteConnections(Protocol):
    """Federation's side of connections with users of other domains (federation/as_flows.py)."""

    async def open(self, principal: Principal, to: str, connection_id: str) -> tuple[str, str]:
        """Record the connection on ``to``'s server; returns (responder uuid, responder id)."""
        ...

    async def relay(self, conn: AsyncConnection, to: str, kind: str, body: dict[str, Any]) -> None:
        """Queue an event for ``to``'s server inside the caller's transaction."""
        ...


async def _recorded(conn: AsyncConnection, by: str, value: str, want: str) -> str | None:
    """The ``want`` column ("id" or "uuid") stored with a user whose ``by`` column is ``value``,
    on either side of any connection row."""
    c = connections.c
    row = (
        await conn.execute(
            sa.select(c[f"requester_{want}"].label("v"))
            .where(c[f"requester_{by}"] == value)
            .union_all(sa.select(c[f"responder_{want}"]).where(c[f"responder_{by}"] == value))
            .limit(1)
        )
    ).first()
    return None if row is None else row.v


class ConnectionService:
    def __init__(
        self,
        db: Database,
        auth: AuthService,
        queues: QueueService,
        clock: Callable[[], float] = time.time,
        remote: RemoteConnections | None = None,
    ):
        self.db = db
        self.auth = auth
        self.queues = queues
        self.clock = clock
        # Connections with users of other domains go through it (federation); None: such
        # users are looked up locally, so they are not found.
        self.remote = remote

    def remote_domain(self, user_id: str) -> str | None:
        """The domain of a valid user id of another domain, else None (``AuthService``)."""
        return self.auth.remote_domain(user_id)

    async def check_remote_uuid(self, conn: AsyncConnection, user_uuid: str, user_id: str) -> None:
        """A uuid a remote server reports for its user must not name a local user or another
        remote user (uuid-keyed checks such as the claim rule would then apply to them)."""
        if await self.auth.find_user_by_uuid(user_uuid, conn) is not None:
            raise Problem(403, "forbidden", "the reported user uuid belongs to another user")
        known = await self.remote_user_id(conn, user_uuid)
        if known is not None and known != user_id:
            raise Problem(403, "forbidden", "the reported user uuid belongs to another user")

    def _event(
        self,
        kind: str,
        conn_id: str | None,
        sender: str,
        payload: bytes | None,
        group_key_wrap: bytes | None = None,
    ) -> bytes:
        event: dict[str, object] = {"type": kind, "from": sender, "sent_at": int(self.clock())}
        if conn_id is not None:
            event["connection_id"] = conn_id
        if payload is not None:
            event["payload"] = b64u(payload)
        event.update(wrap_field(group_key_wrap))
        return json.dumps(event, separators=(",", ":")).encode()

    async def open(self, principal: Principal, to: str) -> Connection:
        if self.remote is not None and self.remote_domain(to) is not None:
            return await self._open_remote(principal, to)
        target = await self.auth.find_user(to)
        if target is None:
            raise Problem(404, "user_not_found", f"no user {to}")
        if target.uuid == principal.user_uuid:
            raise Problem(422, "invalid_target", "a user cannot connect to themselves")
        return await self.record_open(
            str(uuid.uuid4()), principal.user_uuid, principal.user_id, target.uuid, target.user_id
        )

    async def _open_remote(self, principal: Principal, to: str) -> Connection:
        assert self.remote is not None
        to = to.strip().lower()
        async with self.db.engine.connect() as conn:
            if await self._open_between_ids(conn, principal.user_id, to):
                raise Problem(409, "connection_exists", "a connection with this user is open")
        conn_id = str(uuid.uuid4())
        responder_uuid, responder_id = await self.remote.open(principal, to, conn_id)
        async with self.db.engine.connect() as conn:
            await self.check_remote_uuid(conn, responder_uuid, responder_id)
        return await self.record_open(
            conn_id, principal.user_uuid, principal.user_id, responder_uuid, responder_id
        )

    async def _open_between_ids(self, conn: AsyncConnection, a: str, b: str) -> bool:
        row = await conn.execute(
            sa.select(connections.c.id).where(
                connections.c.open_pair.is_not(None),
                sa.or_(
                    sa.and_(connections.c.requester_id == a, connections.c.responder_id == b),
                    sa.and_(connections.c.requester_id == b, connections.c.responder_id == a),
                ),
            )
        )
        return row.first() is not None

    async def record_open(
        self,
        conn_id: str,
        requester_uuid: str,
        requester_id: str,
        responder_uuid: str,
        responder_id: str,
    ) -> Connection:
        """Insert a connection in state ``opening`` (one open connection per pair). The same
        id for the same parties again returns the existing row (a retried federated open)."""
        now = int(self.clock())
        exists = Problem(409, "connection_exists", "a connection with this user exists or is open")
        pair = open_pair(requester_uuid, responder_uuid)
        row = {
            "id": conn_id,
            "requester_uuid": requester_uuid,
            "responder_uuid": responder_uuid,
            "requester_id": requester_id,
            "responder_id": responder_id,
            "state": "opening",
            "claim_used": False,
            "open_pair": pair,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.db.transaction() as conn:
                taken = (
                    await conn.execute(
                        sa.select(connections).where(connections.c.open_pair == pair)
                    )
                ).first()
                if taken is not None:
                    if taken.id == conn_id and taken.requester_uuid == requester_uuid:
                        return _conn(taken)
                    raise exists
                await conn.execute(sa.insert(connections).values(**row))
        except IntegrityError:
            raise exists from None  # a concurrent open for the same pair won the unique index
        return Connection(conn_id, requester_id, responder_id, "opening", now, now)

    async def _load(self, conn: AsyncConnection, conn_id: str) -> sa.Row:
        try:
            uuid.UUID(conn_id)
        except ValueError:
            raise Problem(404, "connection_not_found", "no such connection") from None
        row = (
            await conn.execute(
                sa.select(connections).where(connections.c.id == conn_id).with_for_update()
            )
        ).first()
        if row is None:
            raise Problem(404, "connection_not_found", "no such connection")
        return row

    async def send_request(
        self,
        principal: Principal,
        conn_id: str,
        payload: bytes,
        group_key_wrap: bytes | None = None,
    ) -> Connection:
        """``group_key_wrap``: the key of the group the request's Welcome joins, wrapped for
        the responder's clients (opaque here, passed on in the event)."""
        now = int(self.clock())
        async with self.db.transaction() as conn:
            row = await self._load(conn, conn_id)
            if row.requester_uuid != principal.user_uuid:
                raise Problem(403, "forbidden", "only the requester sends the request")
            if row.state != "opening":
                raise Problem(409, "invalid_state", f"the connection is {row.state}")
            await conn.execute(
                sa.update(connections)
                .where(connections.c.id == conn_id)
                .values(state="pending", updated_at=now)
            )
            if self.remote is not None and self.remote_domain(row.responder_id):
                body = {"connection_id": conn_id, "from": principal.user_id, "to": row.responder_id}
                body["payload"] = b64u(payload)
                body.update(wrap_field(group_key_wrap))
                await self.remote.relay(conn, row.responder_id, "conn.request", body)
            else:
                event = self._event(
                    "connection_request", conn_id, principal.user_id, payload, group_key_wrap
                )
                await self.queues.enqueue_direct(conn, row.responder_uuid, event)
            row = await self._load(conn, conn_id)
        return _conn(row)

    async def receive_request(
        self,
        conn: AsyncConnection,
        conn_id: str,
        requester_id: str,
        payload: bytes,
        group_key_wrap: bytes | None = None,
    ) -> None:
        """A remote requester's request, delivered by its server (inside the inbox item's
        transaction): ``opening`` -> ``pending`` and a ``connection_request`` event."""
        row = await self._load(conn, conn_id)
        if row.requester_id != requester_id:
            raise Problem(403, "forbidden", "only the requester sends the request")
        if row.state != "opening":
            raise Problem(409, "invalid_state", f"the connection is {row.state}")
        await conn.execute(
            sa.update(connections)
            .where(connections.c.id == conn_id)
            .values(state="pending", updated_at=int(self.clock()))
        )
        event = self._event("connection_request", conn_id, requester_id, payload, group_key_wrap)
        await self.queues.enqueue_direct(conn, row.responder_uuid, event)

    async def answer(
        self, principal: Principal, conn_id: str, accept: bool, payload: bytes | None
    ) -> Connection:
        now = int(self.clock())
        async with self.db.transaction() as conn:
            row = await self._load(conn, conn_id)
            if row.responder_uuid != principal.user_uuid:
                raise Problem(403, "forbidden", "only the responder answers a request")
            if row.state != "pending":
                raise Problem(409, "invalid_state", f"the connection is {row.state}")
            if self.remote is not None and self.remote_domain(row.requester_id):
                await self._settle(conn, row, accept, now)
                body = {"connection_id": conn_id, "from": principal.user_id, "to": row.requester_id}
                if payload is not None:
                    body["payload"] = b64u(payload)
                kind = "conn.accept" if accept else "conn.reject"
                await self.remote.relay(conn, row.requester_id, kind, body)
            else:
                await self._settle(conn, row, accept, now, principal.user_id, payload)
            # The responder's other clients learn the answer too (they join the request's
            # group on an accept, drop its Welcome on a reject).
            kind = "connection_accepted" if accept else "connection_rejected"
            event = self._event(kind, conn_id, principal.user_id, None)
            await self.queues.enqueue_direct(conn, row.responder_uuid, event)
            row = await self._load(conn, conn_id)
        return _conn(row)

    async def _settle(
        self,
        conn: AsyncConnection,
        row: sa.Row,
        accept: bool,
        now: int,
        tell_from: str | None = None,
        payload: bytes | None = None,
    ) -> None:
        """Accept or reject; with ``tell_from`` the requester's direct queue gets the event."""
        state = "accepted" if accept else "rejected"
        await conn.execute(
            sa.update(connections)
            .where(connections.c.id == row.id)
            .values(state=state, updated_at=now, open_pair=row.open_pair if accept else None)
        )
        if tell_from is not None:
            kind = "connection_accepted" if accept else "connection_rejected"
            event = self._event(kind, row.id, tell_from, payload)
            await self.queues.enqueue_direct(conn, row.requester_uuid, event)

    async def receive_answer(
        self,
        conn: AsyncConnection,
        conn_id: str,
        responder_id: str,
        accept: bool,
        payload: bytes | None,
    ) -> None:
        """A remote responder's answer, delivered by its server: ``pending`` -> accepted or
        rejected, and the event in the (local) requester's direct queue."""
        row = await self._load(conn, conn_id)
        if row.responder_id != responder_id:
            raise Problem(403, "forbidden", "only the responder answers a request")
        if row.state != "pending":
            raise Problem(409, "invalid_state", f"the connection is {row.state}")
        await self._settle(conn, row, accept, int(self.clock()), responder_id, payload)

    async def list_for(
        self, principal: Principal, limit: int, after: tuple[int, str] | None = None
    ) -> list[Connection]:
        """Oldest first; ``after`` is the (created_at, id) of the last row already seen."""
        query = sa.select(connections).where(
            sa.or_(
                connections.c.requester_uuid == principal.user_uuid,
                connections.c.responder_uuid == principal.user_uuid,
            )
        )
        if after is not None:
            query = query.where(
                sa.or_(
                    connections.c.created_at > after[0],
                    sa.and_(connections.c.created_at == after[0], connections.c.id > after[1]),
                )
            )
        query = query.order_by(connections.c.created_at, connections.c.id).limit(limit)
        async with self.db.engine.connect() as conn:
            return [_conn(r) for r in await conn.execute(query)]

    async def is_connected(self, conn: AsyncConnection, a: str, b: str) -> bool:
        row = await conn.execute(
            sa.select(connections.c.id).where(_between(a, b), connections.c.state == "accepted")
        )
        return row.first() is not None

    async def request_open(self, conn: AsyncConnection, requester: str, responder: str) -> bool:
        """``requester`` has an unanswered request (``opening`` or ``pending``) to ``responder``:
        the DS lets it add the responder to the request's two-user group."""
        row = await conn.execute(
            sa.select(connections.c.id).where(
                connections.c.requester_uuid == requester,
                connections.c.responder_uuid == responder,
                connections.c.state.in_(("opening", "pending")),
            )
        )
        return row.first() is not None

    async def authorize_claim(self, conn: AsyncConnection, requester: str, target: str) -> bool:
        """Inside the claim's transaction: allow, or consume the opening request's one claim.

        Returns True when the claim is that one claim of an ``opening`` connection (the target
        has not accepted the requester), False for the user itself or an accepted connection.
        The one claim is per pair in total: a requester whose earlier request was rejected does
        not get another by opening again.
        """
        if requester == target or await self.is_connected(conn, requester, target):
            return False
        rows = (
            await conn.execute(
                sa.select(connections.c.id, connections.c.state, connections.c.claim_used)
                .where(
                    connections.c.requester_uuid == requester,
                    connections.c.responder_uuid == target,
                )
                .with_for_update()
            )
        ).all()
        opening = [r for r in rows if r.state == "opening"]
        if not opening or any(r.claim_used for r in rows):
            raise Problem(403, "no_connection", "KeyPackages are only given to connected users")
        await conn.execute(
            sa.update(connections).where(connections.c.id == opening[0].id).values(claim_used=True)
        )
        return True

    async def remote_user_uuid(self, conn: AsyncConnection, user_id: str) -> str | None:
        """The uuid a remote user's server reported for ``user_id`` (from a connection row)."""
        return await _recorded(conn, "id", canonical_user_id(user_id), "uuid")

    async def remote_user_id(self, conn: AsyncConnection, user_uuid: str) -> str | None:
        """The user id recorded with ``user_uuid`` in a connection row, if any."""
        return await _recorded(conn, "uuid", user_uuid, "id")

    async def release_claim(self, requester: str, target: str) -> None:
        """Give an opening request its claim back (a forwarded claim failed remotely)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(connections)
                .where(
                    connections.c.requester_uuid == requester,
                    connections.c.responder_uuid == target,
                    connections.c.state == "opening",
                )
                .values(claim_used=False)
            )

    async def receive_direct(
        self, conn: AsyncConnection, from_id: str, to: str, payload: bytes
    ) -> None:
        """A direct message from a remote user (inbox item): needs an accepted connection."""
        target = await self.auth.find_user(to, conn)
        if target is None:
            raise Problem(404, "user_not_found", f"no user {to}")
        sender = await self.remote_user_uuid(conn, from_id)
        if sender is None or not await self.is_connected(conn, sender, target.uuid):
            raise Problem(403, "no_connection", "direct messages need an accepted connection")
        await self.queues.enqueue_direct(
            conn, target.uuid, self._event("message", None, from_id, payload)
        )

    async def send_direct(self, principal: Principal, to: str, payload: bytes) -> None:
        if self.remote is not None and self.remote_domain(to) is not None:
            await self._send_direct_remote(principal, to.strip().lower(), payload)
            return
        target = await self.auth.find_user(to)
        if target is None:
            raise Problem(404, "user_not_found", f"no user {to}")
        async with self.db.transaction() as conn:
            if target.uuid != principal.user_uuid and not await self.is_connected(
                conn, principal.user_uuid, target.uuid
            ):
                raise Problem(403, "no_connection", "direct messages need an accepted connection")
            await self.queues.enqueue_direct(
                conn, target.uuid, self._event("message", None, principal.user_id, payload)
            )

    async def _send_direct_remote(self, principal: Principal, to: str, payload: bytes) -> None:
        assert self.remote is not None
        async with self.db.transaction() as conn:
            target = await self.remote_user_uuid(conn, to)
            if target is None or not await self.is_connected(conn, principal.user_uuid, target):
                raise Problem(403, "no_connection", "direct messages need an accepted connection")
            body = {"from": principal.user_id, "to": to, "payload": b64u(payload)}
            await self.remote.relay(conn, to, "direct.message", body)

    async def remote_domains_of(self, conn: AsyncConnection, user_id: str) -> list[str]:
        """The other domains ``user_id`` has connections with (any state), sorted, unique."""
        user_id = canonical_user_id(user_id)
        rows = await conn.execute(
            sa.select(connections.c.responder_id.label("other"))
            .where(connections.c.requester_id == user_id)
            .union(
                sa.select(connections.c.requester_id).where(connections.c.responder_id == user_id)
            )
        )
        domains = {d for r in rows if (d := self.remote_domain(r.other)) is not None}
        return sorted(domains)

    async def delete_remote_user_connections(self, conn: AsyncConnection, user_id: str) -> None:
        """A user of another domain deleted their account (federation inbox): forget them."""
        user_id = canonical_user_id(user_id)
        await conn.execute(
            sa.delete(connections).where(
                sa.or_(connections.c.requester_id == user_id, connections.c.responder_id == user_id)
            )
        )

    async def delete_user_connections(
        self, conn: AsyncConnection, user_uuid: str, _clients: list[str]
    ) -> None:
        """Deletion hook for account deletion."""
        await conn.execute(
            sa.delete(connections).where(
                sa.or_(
                    connections.c.requester_uuid == user_uuid,
                    connections.c.responder_uuid == user_uuid,
                )
            )
        )
