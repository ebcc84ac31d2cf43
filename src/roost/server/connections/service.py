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

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..auth.service import AuthService, Principal
from ..encoding import b64u
from ..errors import Problem
from ..queues.service import QueueService
from ..store import Database
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


class ConnectionService:
    def __init__(
        self,
        db: Database,
        auth: AuthService,
        queues: QueueService,
        clock: Callable[[], float] = time.time,
    ):
        self.db = db
        self.auth = auth
        self.queues = queues
        self.clock = clock

    def _event(self, kind: str, conn_id: str | None, sender: str, payload: bytes | None) -> bytes:
        event: dict[str, object] = {"type": kind, "from": sender, "sent_at": int(self.clock())}
        if conn_id is not None:
            event["connection_id"] = conn_id
        if payload is not None:
            event["payload"] = b64u(payload)
        return json.dumps(event, separators=(",", ":")).encode()

    async def open(self, principal: Principal, to: str) -> Connection:
        target = await self.auth.find_user(to)
        if target is None:
            raise Problem(404, "user_not_found", f"no user {to}")
        if target.uuid == principal.user_uuid:
            raise Problem(422, "invalid_target", "a user cannot connect to themselves")
        now = int(self.clock())
        exists = Problem(409, "connection_exists", "a connection with this user exists or is open")
        pair = open_pair(principal.user_uuid, target.uuid)
        row = {
            "id": str(uuid.uuid4()),
            "requester_uuid": principal.user_uuid,
            "responder_uuid": target.uuid,
            "requester_id": principal.user_id,
            "responder_id": target.user_id,
            "state": "opening",
            "claim_used": False,
            "open_pair": pair,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.db.transaction() as conn:
                taken = await conn.execute(
                    sa.select(connections.c.id).where(connections.c.open_pair == pair)
                )
                if taken.first() is not None:
                    raise exists
                await conn.execute(sa.insert(connections).values(**row))
        except IntegrityError:
            raise exists from None  # a concurrent open for the same pair won the unique index
        return Connection(row["id"], principal.user_id, target.user_id, "opening", now, now)

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

    async def send_request(self, principal: Principal, conn_id: str, payload: bytes) -> Connection:
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
            event = self._event("connection_request", conn_id, principal.user_id, payload)
            await self.queues.enqueue_direct(conn, row.responder_uuid, event)
            row = await self._load(conn, conn_id)
        return _conn(row)

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
            state = "accepted" if accept else "rejected"
            await conn.execute(
                sa.update(connections)
                .where(connections.c.id == conn_id)
                .values(state=state, updated_at=now, open_pair=row.open_pair if accept else None)
            )
            kind = "connection_accepted" if accept else "connection_rejected"
            event = self._event(kind, conn_id, principal.user_id, payload)
            await self.queues.enqueue_direct(conn, row.requester_uuid, event)
            row = await self._load(conn, conn_id)
        return _conn(row)

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

    async def authorize_claim(self, conn: AsyncConnection, requester: str, target: str) -> None:
        """Inside the claim's transaction: allow, or consume the opening request's one claim."""
        if requester == target or await self.is_connected(conn, requester, target):
            return
        row = (
            await conn.execute(
                sa.select(connections.c.id)
                .where(
                    connections.c.requester_uuid == requester,
                    connections.c.responder_uuid == target,
                    connections.c.state == "opening",
                    connections.c.claim_used.is_(False),
                )
                .with_for_update()
            )
        ).first()
        if row is None:
            raise Problem(403, "no_connection", "KeyPackages are only given to connected users")
        await conn.execute(
            sa.update(connections).where(connections.c.id == row.id).values(claim_used=True)
        )

    async def send_direct(self, principal: Principal, to: str, payload: bytes) -> None:
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
