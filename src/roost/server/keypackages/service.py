"""KeyPackage directory: publish (replace), claim (atomic, last one re-served), count.

Atomic claims: on PostgreSQL the claim locks the target client's packages of the suite with
``SELECT ... FOR UPDATE`` (a concurrent claim waits, then sees the row deleted and takes the
next one); on SQLite the whole transaction is an exclusive write (``BEGIN IMMEDIATE``). Either
way no package is handed out twice, and the count check that protects the last package is
made under the same lock.

Publish is the trust boundary (RFC 9420 section 10.1 checks, in ``validation``): the body is
verified once into ``VerifiedKeyPackage`` values and only those are stored, so a claim serves
stored bytes back verbatim without verifying them again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..config import Limits
from ..errors import Problem
from ..store import Database
from .tables import key_packages
from .validation import Publisher, VerifiedKeyPackage, validate_batch

# (conn, requester user uuid, target user uuid) -> None or raises Problem
ClaimAuthorizer = Callable[[AsyncConnection, str, str], Awaitable[None]]
# (conn, user uuid) -> the user's client uuids
ClientLister = Callable[[str, AsyncConnection], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Counts:
    count: int
    last_resort: int
    by_cipher_suite: dict[int, int]


class KeyPackageService:
    def __init__(
        self,
        db: Database,
        limits: Limits,
        authorize_claim: ClaimAuthorizer,
        clients_of: ClientLister,
        clock: Callable[[], float] = time.time,
    ):
        self.db = db
        self.limits = limits
        self.authorize_claim = authorize_claim
        self.clients_of = clients_of
        self.clock = clock

    async def publish(
        self, client_uuid: str, user_uuid: str, publisher: Publisher, body: bytes
    ) -> list[VerifiedKeyPackage]:
        """Replace the client's packages with the batch in ``body``, verified here once (the
        trust boundary); everything after it handles ``VerifiedKeyPackage``s only."""
        now = int(self.clock())
        packages = validate_batch(
            body,
            publisher,
            now,
            self.limits.max_keypackages_per_batch,
            self.limits.keypackage_max_lifetime_days * 86400,
        )
        await self._replace(client_uuid, user_uuid, packages, now)
        return packages

    async def _replace(
        self, client_uuid: str, user_uuid: str, packages: list[VerifiedKeyPackage], now: int
    ) -> None:
        try:
            async with self.db.transaction() as conn:
                # Lock the client's current packages so a concurrent claim cannot interleave.
                await conn.execute(
                    sa.select(key_packages.c.id)
                    .where(key_packages.c.client_uuid == client_uuid)
                    .with_for_update()
                )
                await conn.execute(
                    sa.delete(key_packages).where(key_packages.c.client_uuid == client_uuid)
                )
                await conn.execute(
                    sa.insert(key_packages),
                    [_row(client_uuid, user_uuid, p, now) for p in packages],
                )
        except IntegrityError:
            raise Problem(
                422, "duplicate_init_key", "an init key of this batch is already published"
            ) from None

    async def counts(self, client_uuid: str) -> Counts:
        now = int(self.clock())
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(key_packages.c.cipher_suite, key_packages.c.last_resort, sa.func.count())
                .where(key_packages.c.client_uuid == client_uuid, key_packages.c.not_after > now)
                .group_by(key_packages.c.cipher_suite, key_packages.c.last_resort)
            )
            by_suite: dict[int, int] = {}
            total = last_resort = 0
            for suite, is_last_resort, n in rows:
                by_suite[suite] = by_suite.get(suite, 0) + n
                total += n
                if is_last_resort:
                    last_resort += n
        return Counts(total, last_resort, by_suite)

    async def claim(
        self,
        requester_user_uuid: str,
        target_user_uuid: str,
        cipher_suite: int,
        requester_client_uuid: str | None = None,
    ) -> list[bytes]:
        """One package per client of the target user (clients without one are skipped; the
        requesting client itself is skipped when a user claims its own other clients')."""
        now = int(self.clock())
        out: list[bytes] = []
        async with self.db.transaction() as conn:
            await self.authorize_claim(conn, requester_user_uuid, target_user_uuid)
            for client_uuid in await self.clients_of(target_user_uuid, conn):
                if client_uuid == requester_client_uuid:
                    continue
                data = await self._claim_one(conn, client_uuid, cipher_suite, now)
                if data is not None:
                    out.append(data)
        return out

    async def _claim_one(
        self, conn: AsyncConnection, client_uuid: str, cipher_suite: int, now: int
    ) -> bytes | None:
        # Expired packages are never handed out; they are dropped here as they are met.
        await conn.execute(
            sa.delete(key_packages).where(
                key_packages.c.client_uuid == client_uuid, key_packages.c.not_after <= now
            )
        )
        rows = (
            await conn.execute(
                sa.select(key_packages.c.id, key_packages.c.data)
                .where(
                    key_packages.c.client_uuid == client_uuid,
                    key_packages.c.cipher_suite == cipher_suite,
                )
                .order_by(key_packages.c.last_resort, key_packages.c.id)
                .with_for_update()
            )
        ).all()
        if not rows:
            return None
        chosen = rows[0]
        if len(rows) > 1:
            await conn.execute(sa.delete(key_packages).where(key_packages.c.id == chosen.id))
        return chosen.data

    async def sweep(self) -> int:
        """Delete expired packages (periodic maintenance); returns how many went."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(key_packages).where(key_packages.c.not_after <= int(self.clock()))
            )
        return result.rowcount or 0

    async def delete_client_packages(self, conn: AsyncConnection, client_uuid: str) -> None:
        """Deletion hook: a removed client's packages go with it."""
        await conn.execute(sa.delete(key_packages).where(key_packages.c.client_uuid == client_uuid))

    async def delete_user_packages(
        self, conn: AsyncConnection, user_uuid: str, _clients: list[str]
    ) -> None:
        await conn.execute(sa.delete(key_packages).where(key_packages.c.user_uuid == user_uuid))


def _row(client_uuid: str, user_uuid: str, p: VerifiedKeyPackage, now: int) -> dict[str, object]:
    """The stored form of a verified package (claims serve ``data`` back verbatim)."""
    return {
        "client_uuid": client_uuid,
        "user_uuid": user_uuid,
        "cipher_suite": p.cipher_suite,
        "last_resort": p.last_resort,
        "init_key_hash": p.init_key_hash,
        "data": p.data,
        "not_after": p.not_after,
        "created_at": now,
    }
