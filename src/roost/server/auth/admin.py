"""The AS's interface for operators (``roost admin users`` / ``tokens``): list, create, suspend
users and list or revoke registration tokens, on the AS's own tables.

The operator module calls these; it never reads or writes the AS's tables itself. Errors are
``AdminError`` with a message for the operator. Deletion is ``AuthService.delete_account``
(every module's deletion hook runs).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import Problem
from ..store.async_engine import AsyncConnection
from . import ids
from .service import AuthService, insert_user
from .tables import account_events, auth_tokens, clients, registration_tokens, users

TOKEN_ID_HEX = 12

# Runs inside the suspension's transaction with the user's uuid (serving processes are told).
SuspendedHook = Callable[[AsyncConnection, str], Awaitable[None]]


class AdminError(Exception):
    """An operator request that cannot be done (unknown user, name taken, …)."""


@dataclass(frozen=True, slots=True)
class AdminUser:
    user_id: str
    uuid: str
    display_name: str | None
    clients: int
    created_at: int
    suspended_at: int | None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str  # first 12 hex digits of the stored hash: names a token without revealing it
    uses_left: int | None
    expires_at: int | None
    created_at: int
    usable: bool


def token_id(token: str) -> str:
    """The id ``roost admin tokens`` shows for a registration token."""
    return hashlib.sha256(token.encode()).hexdigest()[:TOKEN_ID_HEX]


async def unprocessed_account_events(conn: AsyncConnection) -> tuple[int, int | None]:
    """(how many account events await the DS, creation time of the oldest) for status."""
    count, oldest = (
        await conn.execute(sa.select(sa.func.count(), sa.func.min(account_events.c.created_at)))
    ).one()
    return int(count), oldest


class AccountAdmin:
    def __init__(self, auth: AuthService) -> None:
        self.auth = auth
        self.db = auth.db
        self.domain = auth.domain

    def name_of(self, user: str) -> str:
        """Accept ``name`` or ``name@<home domain>``."""
        name, _, domain = user.partition("@")
        if domain and domain.lower() != self.domain:
            raise AdminError(f"{user} is not a user of {self.domain}")
        try:
            return ids.normalize_name(name)
        except Problem as e:
            raise AdminError(str(e)) from None

    async def list_users(self, *, limit: int = 100, after: str | None = None) -> list[AdminUser]:
        """Users by name, ``limit`` at a time after the name ``after`` (cursor)."""
        n_clients = (
            sa.select(sa.func.count())
            .where(clients.c.user_uuid == users.c.uuid)
            .scalar_subquery()
            .label("n_clients")
        )
        query = sa.select(users, n_clients).order_by(users.c.name).limit(limit)
        if after:
            query = query.where(users.c.name > after)
        async with self.db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        return [
            AdminUser(
                ids.user_id(r.name, self.domain),
                r.uuid,
                r.display_name,
                r.n_clients,
                r.created_at,
                r.suspended_at,
            )
            for r in rows
        ]

    async def get_user(self, user: str) -> AdminUser:
        name = self.name_of(user)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.name == name))).first()
            if row is None:
                raise AdminError(f"no user {ids.user_id(name, self.domain)}")
            n = (
                await conn.execute(
                    sa.select(sa.func.count()).where(clients.c.user_uuid == row.uuid)
                )
            ).scalar_one()
        return AdminUser(
            ids.user_id(name, self.domain),
            row.uuid,
            row.display_name,
            n,
            row.created_at,
            row.suspended_at,
        )

    async def create_user(
        self, user: str, *, password: str | None, display_name: str | None = None
    ) -> AdminUser:
        """A user without clients; the person adds their first client with the password."""
        name = self.name_of(user)
        password_hash = await self.auth.hash_password(password) if password is not None else None
        now = self.auth.now()
        user_uuid = str(uuid.uuid4())
        try:
            async with self.db.transaction() as conn:
                if not await insert_user(
                    conn, user_uuid, name, display_name, False, password_hash, now
                ):
                    raise AdminError(f"the user name {name} is taken (or retired)")
        except IntegrityError:
            raise AdminError(f"the user name {name} is taken") from None
        return AdminUser(ids.user_id(name, self.domain), user_uuid, display_name, 0, now, None)

    async def set_suspended(
        self, user: str, suspended: bool, on_suspended: SuspendedHook
    ) -> AdminUser:
        """Suspend (revoking every live token; ``on_suspended`` runs in the same transaction)
        or lift a suspension; idempotent."""
        name = self.name_of(user)
        async with self.db.transaction() as conn:
            row = (
                await conn.execute(
                    sa.select(users.c.uuid, users.c.suspended_at).where(users.c.name == name)
                )
            ).first()
            if row is None:
                raise AdminError(f"no user {ids.user_id(name, self.domain)}")
            if suspended and row.suspended_at is None:
                await conn.execute(
                    sa.update(users)
                    .where(users.c.uuid == row.uuid)
                    .values(suspended_at=self.auth.now())
                )
            elif not suspended and row.suspended_at is not None:
                await conn.execute(
                    sa.update(users).where(users.c.uuid == row.uuid).values(suspended_at=None)
                )
            if suspended:
                await conn.execute(
                    sa.delete(auth_tokens).where(
                        auth_tokens.c.client_uuid.in_(
                            sa.select(clients.c.uuid).where(clients.c.user_uuid == row.uuid)
                        )
                    )
                )
                await on_suspended(conn, row.uuid)
        return await self.get_user(name)

    async def list_tokens(self) -> list[TokenInfo]:
        now = self.auth.now()
        async with self.db.engine.connect() as conn:
            rows = list(
                await conn.execute(
                    sa.select(registration_tokens).order_by(registration_tokens.c.created_at)
                )
            )
        return [
            TokenInfo(
                r.token_hash.hex()[:TOKEN_ID_HEX],
                r.uses_left,
                r.expires_at,
                r.created_at,
                (r.uses_left is None or r.uses_left > 0)
                and (r.expires_at is None or r.expires_at > now),
            )
            for r in rows
        ]

    async def revoke_token(self, token_id: str) -> None:
        """Revoke the one registration token whose id starts with ``token_id``."""
        token_id = token_id.strip().lower()
        if len(token_id) < 6 or any(c not in "0123456789abcdef" for c in token_id):
            raise AdminError("a token id is at least 6 hex digits (see `roost admin tokens list`)")
        matches = [t for t in await self.list_tokens() if t.id.startswith(token_id)]
        if not matches:
            raise AdminError(f"no registration token {token_id}")
        if len(matches) > 1:
            raise AdminError(f"{token_id} names several tokens; give more digits")
        async with self.db.transaction() as conn:
            rows = list(await conn.execute(sa.select(registration_tokens.c.token_hash)))
            for r in rows:
                if r.token_hash.hex().startswith(matches[0].id):
                    await conn.execute(
                        sa.delete(registration_tokens).where(
                            registration_tokens.c.token_hash == r.token_hash
                        )
                    )
