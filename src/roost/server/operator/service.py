"""Operator actions on the database named by the config (``roost admin``).

Runs on the host beside (or without) a serving process. User deletion goes through the AS's
``delete_account`` with every module's deletion hook wired (``build_services``), so the Delivery
Service gets its ``user_deleted`` account event exactly as for a self-service deletion.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..auth import ids
from ..auth.service import Principal
from ..auth.tables import auth_tokens, clients, registration_tokens, retired_names, users
from ..config import Config
from ..deps import Services
from ..errors import Problem
from ..notify.pg_bridge import publish_user_revoked
from ..store import Database
from .federation import FederationPolicyStore
from .status import (
    OutboxStatus,
    QueueKindStatus,
    StorageStats,
    outbox_status,
    queue_status,
    storage_stats,
)


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


TOKEN_ID_HEX = 12


class AdminService:
    def __init__(
        self, db: Database, config: Config, services: Services, clock: Callable[[], float]
    ) -> None:
        self.db = db
        self.config = config
        self.services = services
        self.clock = clock
        self.federation = FederationPolicyStore(db, clock, cache_seconds=0)

    @classmethod
    def open(cls, config: Config, clock: Callable[[], float] = time.time) -> AdminService:
        from ..app import build_services

        db = Database(config.sqlalchemy_url)
        return cls(db, config, build_services(db, config, clock), clock)

    async def close(self) -> None:
        await self.db.dispose()

    @property
    def domain(self) -> str:
        return self.config.home_domain

    # ---- users -----------------------------------------------------------------------------

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
        name = self._name(user)
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

    def _name(self, user: str) -> str:
        """Accept ``name`` or ``name@<home domain>``."""
        name, _, domain = user.partition("@")
        if domain and domain.lower() != self.domain:
            raise AdminError(f"{user} is not a user of {self.domain}")
        try:
            return ids.normalize_name(name)
        except Problem as e:
            raise AdminError(str(e)) from None

    async def create_user(
        self, user: str, *, password: str | None, display_name: str | None = None
    ) -> AdminUser:
        """A user without clients; the person adds their first client with the password."""
        name = self._name(user)
        password_hash = (
            await self.services.auth.hash_password(password) if password is not None else None
        )
        now = int(self.clock())
        user_uuid = str(uuid.uuid4())
        try:
            async with self.db.transaction() as conn:
                taken = await conn.execute(
                    sa.select(users.c.uuid)
                    .where(users.c.name == name)
                    .union_all(sa.select(retired_names.c.name).where(retired_names.c.name == name))
                )
                if taken.first() is not None:
                    raise AdminError(f"the user name {name} is taken (or retired)")
                await conn.execute(
                    sa.insert(users).values(
                        uuid=user_uuid,
                        name=name,
                        display_name=display_name,
                        discoverable=False,
                        password_hash=password_hash,
                        created_at=now,
                    )
                )
        except IntegrityError:
            raise AdminError(f"the user name {name} is taken") from None
        return AdminUser(ids.user_id(name, self.domain), user_uuid, display_name, 0, now, None)

    async def set_suspended(self, user: str, suspended: bool) -> AdminUser:
        """Suspend (revoking every live token) or lift a suspension; idempotent."""
        name = self._name(user)
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
                    .values(suspended_at=int(self.clock()))
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
                # Serving processes drop cached tokens and sockets of the user at commit.
                await publish_user_revoked(conn, row.uuid)
        return await self.get_user(name)

    async def delete_user(self, user: str) -> str:
        info = await self.get_user(user)
        name = self._name(user)
        # delete_account reads only the user fields of the principal (no client acts here).
        principal = Principal(info.uuid, name, info.user_id, "", "")
        await self.services.auth.delete_account(principal)
        async with self.db.transaction() as conn:
            await publish_user_revoked(conn, info.uuid)  # serving processes: tokens, sockets
        return info.user_id

    # ---- registration tokens ---------------------------------------------------------------

    async def create_token(self, uses: int | None, ttl_seconds: int | None) -> tuple[str, str]:
        """(token shown once, its id)."""
        if uses is not None and uses < 1:
            raise AdminError("--uses must be at least 1")
        if ttl_seconds is not None and ttl_seconds < 1:
            raise AdminError("--ttl-seconds must be at least 1")
        token = await self.services.auth.create_registration_token(uses, ttl_seconds)
        return token, hashlib.sha256(token.encode()).hexdigest()[:TOKEN_ID_HEX]

    async def list_tokens(self) -> list[TokenInfo]:
        now = int(self.clock())
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

    # ---- status ----------------------------------------------------------------------------

    async def queue_status(self) -> list[QueueKindStatus]:
        async with self.db.engine.connect() as conn:
            return await queue_status(conn, self.clock())

    async def outbox_status(self) -> list[OutboxStatus]:
        async with self.db.engine.connect() as conn:
            return await outbox_status(conn, self.clock())

    async def storage_stats(self) -> StorageStats:
        return await storage_stats(self.db)
