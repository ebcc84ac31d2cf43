"""Operator actions on the database named by the config (``roost admin``).

Runs on the host beside (or without) a serving process. Each module's data is changed through
that module's interface: users and registration tokens through the AS's ``AccountAdmin``, the
federation policy through ``FederationPolicyStore``. User deletion goes through the AS's
``delete_account`` with every module's deletion hook wired (``build_services``), so the Delivery
Service gets its ``user_deleted`` account event exactly as for a self-service deletion.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..auth.admin import AccountAdmin, AdminError, AdminUser, TokenInfo, token_id
from ..auth.service import Principal
from ..config import Config
from ..deps import Services
from ..federation.forget import Forgotten, forget_domain
from ..federation.policy import FederationPolicyStore
from ..notify.pg_bridge import publish_user_revoked
from ..store import Database
from .status import (
    OutboxStatus,
    QueueKindStatus,
    StorageStats,
    outbox_status,
    queue_status,
    storage_stats,
)

# Re-exported: `roost admin` and its tests name them from here.
__all__ = ["AdminError", "AdminService", "AdminUser", "TokenInfo"]


class AdminService:
    def __init__(
        self, db: Database, config: Config, services: Services, clock: Callable[[], float]
    ) -> None:
        self.db = db
        self.config = config
        self.services = services
        self.clock = clock
        self.federation = FederationPolicyStore(db, clock, cache_seconds=0)
        self.accounts = AccountAdmin(services.auth)

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
        return await self.accounts.list_users(limit=limit, after=after)

    async def get_user(self, user: str) -> AdminUser:
        return await self.accounts.get_user(user)

    async def create_user(
        self, user: str, *, password: str | None, display_name: str | None = None
    ) -> AdminUser:
        """A user without clients; the person adds their first client with the password."""
        return await self.accounts.create_user(user, password=password, display_name=display_name)

    async def set_suspended(self, user: str, suspended: bool) -> AdminUser:
        """Suspend (revoking every live token) or lift a suspension; idempotent."""
        # Serving processes drop cached tokens and sockets of the user at commit.
        return await self.accounts.set_suspended(user, suspended, publish_user_revoked)

    async def delete_user(self, user: str) -> str:
        info = await self.get_user(user)
        name = self.accounts.name_of(user)
        # delete_account reads only the user fields of the principal (no client acts here).
        principal = Principal(info.uuid, name, info.user_id, "", "")
        await self.services.auth.delete_account(principal)
        async with self.db.transaction() as conn:
            await publish_user_revoked(conn, info.uuid)  # serving processes: tokens, sockets
        return info.user_id

    # ---- federation ------------------------------------------------------------------------

    async def forget_domain(self, domain: str) -> Forgotten:
        """Block ``domain`` for good and discard what is queued for it; serving processes'
        Delivery Services then remove its members from the groups hosted here."""
        if domain.strip().lower() == self.domain:
            raise AdminError("this server cannot forget its own domain")
        return await forget_domain(self.db, self.federation, domain)

    # ---- registration tokens ---------------------------------------------------------------

    async def create_token(self, uses: int | None, ttl_seconds: int | None) -> tuple[str, str]:
        """(token shown once, its id)."""
        if uses is not None and uses < 1:
            raise AdminError("--uses must be at least 1")
        if ttl_seconds is not None and ttl_seconds < 1:
            raise AdminError("--ttl-seconds must be at least 1")
        token = await self.services.auth.create_registration_token(uses, ttl_seconds)
        return token, token_id(token)

    async def list_tokens(self) -> list[TokenInfo]:
        return await self.accounts.list_tokens()

    async def revoke_token(self, token_id: str) -> None:
        await self.accounts.revoke_token(token_id)

    # ---- status ----------------------------------------------------------------------------

    async def queue_status(self) -> list[QueueKindStatus]:
        async with self.db.engine.connect() as conn:
            return await queue_status(conn, self.clock())

    async def outbox_status(self) -> list[OutboxStatus]:
        async with self.db.engine.connect() as conn:
            return await outbox_status(conn, self.clock())

    async def storage_stats(self) -> StorageStats:
        return await storage_stats(self.db)
