"""Realtime tickets: short-lived, single-use secrets that authenticate one upgrade of
``/v1/realtime`` without an ``Authorization`` header (a browser's ``WebSocket`` cannot send one).

A ticket is issued to a caller authenticated by its bearer token and is bound to that token:
redeeming it yields the token's principal and the token's hash, which the socket then re-checks
like one opened with the header. Tickets live in the database as SHA-256 hashes, so a ticket
issued through one process is redeemed by any other on the same PostgreSQL, and redeeming
deletes the row (``DELETE … RETURNING``): a ticket opens one socket at most, even when two
processes race for it. Deleting the token (client removed, account deleted or suspended, token
expired and swept) deletes its tickets with it (foreign key, ``ON DELETE CASCADE``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from roost.protocol.base64url import b64u, unb64u

from ..errors import Problem
from .service import AuthService, Principal, token_hash
from .tables import realtime_tickets as t

TICKET_BYTES = 32
# Unexpired tickets one client may hold: a page needs one per (re)connect, so a few cover
# retries, and a runaway page cannot grow the table.
MAX_LIVE_TICKETS = 8


def _hash(ticket: bytes) -> bytes:
    return hashlib.sha256(ticket).digest()


def _invalid() -> Problem:
    return Problem(401, "invalid_ticket", "the ticket is unknown, already used or expired")


class RealtimeTickets:
    def __init__(self, auth: AuthService, ttl_seconds: int) -> None:
        self.auth = auth
        self.ttl = ttl_seconds

    async def issue(self, principal: Principal, token: str) -> tuple[str, int]:
        """A new ticket for ``principal``'s client, bound to ``token`` (the bearer token the
        request was authenticated with); returns the ticket and its expiry (unix seconds)."""
        hashed = token_hash(token)
        if hashed is None:  # the caller was authenticated with it: cannot happen
            raise Problem(401, "unauthenticated", "invalid bearer token")
        ticket = secrets.token_bytes(TICKET_BYTES)
        now = self.auth.now()
        expires = now + self.ttl
        mine = t.c.client_uuid == principal.client_uuid
        try:
            async with self.auth.db.transaction() as conn:
                await conn.execute(sa.delete(t).where(mine, t.c.expires_at <= now))
                live = (
                    await conn.execute(sa.select(sa.func.count()).select_from(t).where(mine))
                ).scalar_one()
                if live >= MAX_LIVE_TICKETS:
                    raise Problem(
                        429,
                        "too_many_tickets",
                        f"at most {MAX_LIVE_TICKETS} unused tickets per client",
                        headers={"Retry-After": str(self.ttl)},
                    )
                await conn.execute(
                    sa.insert(t).values(
                        ticket_hash=_hash(ticket),
                        token_hash=hashed,
                        client_uuid=principal.client_uuid,
                        expires_at=expires,
                    )
                )
        except IntegrityError:
            # The token was deleted (revoked) since the request was authenticated.
            raise Problem(401, "unauthenticated", "invalid bearer token") from None
        return b64u(ticket), expires

    async def redeem(self, ticket: str) -> tuple[Principal, bytes]:
        """Use up ``ticket``: the principal of the token it was issued with, and that token's
        hash (for the socket's periodic re-check). Raises 401 ``invalid_ticket`` for an
        unknown, used or expired ticket, or the token's own problem (expired, suspended)."""
        try:
            raw = unb64u(ticket)
        except ValueError:
            raw = b""
        if len(raw) != TICKET_BYTES:
            raise _invalid()
        hashed = _hash(raw)
        async with self.auth.db.transaction() as conn:
            row = (
                await conn.execute(
                    sa.delete(t)
                    .where(t.c.ticket_hash == hashed)
                    .returning(t.c.ticket_hash, t.c.token_hash, t.c.client_uuid, t.c.expires_at)
                )
            ).first()
        # The lookup is by hash, so timing reveals nothing about the ticket; compare anyway.
        if row is None or not hmac.compare_digest(row.ticket_hash, hashed):
            raise _invalid()
        if row.expires_at <= self.auth.now():
            raise _invalid()
        try:
            principal = await self.auth.authenticate_token_hash(row.token_hash)
        except Problem as p:
            if p.code == "unauthenticated":  # the token is gone: so is the ticket
                raise _invalid() from None
            raise
        if principal.client_uuid != row.client_uuid:  # a token never changes clients
            raise _invalid()
        return principal, row.token_hash
