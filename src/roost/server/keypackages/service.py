"""KeyPackage directory: publish (replace), claim (atomic, last one re-served), count.

Atomic claims: on PostgreSQL the claim locks the target client's packages of the suite with
``SELECT ... FOR UPDATE`` (a concurrent claim waits, then sees the row deleted and takes the
next one); on SQLite the whole transaction is an exclusive write (``BEGIN IMMEDIATE``). Either
way no ordinary package is handed out twice, and the count checks that protect the last package
and the reserve are made under the same lock.

Drain protection (docs/api.md, "KeyPackages"): claims of one target user are rate-limited over
all requesters, and a requester the target has not accepted (an ``opening`` connection's one
claim) never takes a client's ordinary packages below ``limits.keypackage_reserve``: past it,
it gets the client's last-resort package, which is not used up.

Publish is the trust boundary (RFC 9420 section 10.1 checks, in ``validation``): the body is
verified once into ``VerifiedKeyPackage`` values and only those are stored, so a claim serves
stored bytes back verbatim without verifying them again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from roost.protocol.key_package_batch import join_mls_vector

from ..auth.service import Principal, UserInfo
from ..config import Limits
from ..errors import Problem
from ..ratelimit import RateLimiter
from ..store import Database
from ..store.async_engine import AsyncConnection
from .tables import key_packages
from .validation import Publisher, VerifiedKeyPackage, validate_batch

# (conn, requester user uuid, target user uuid) -> whether the claim is an ``opening``
# connection's one claim (the target has not accepted the requester), or raises Problem
ClaimAuthorizer = Callable[[AsyncConnection, str, str], Awaitable[bool]]
# (conn, user uuid) -> the user's client uuids
ClientLister = Callable[[str, AsyncConnection], Awaitable[list[str]]]


class ClaimTargets(Protocol):
    """Whose KeyPackages a claim names: the AS (``AuthService``)."""

    def remote_domain(self, user_id: str) -> str | None: ...

    async def find_user(
        self, user_id_text: str, conn: AsyncConnection | None = None
    ) -> UserInfo | None: ...


class RemoteClaims(Protocol):
    """Claims for users of other domains, made on their servers (federation/as_flows.py)."""

    async def claim(
        self, principal: Principal, user_id: str, cipher_suite: int, client_uuid: str | None = None
    ) -> bytes:
        """The target server's answer: an MLS vector of one KeyPackage per client (of that
        one client only, when ``client_uuid`` is given)."""
        ...


class _NothingHandedOut(Exception):
    """A claim under an opening request found no package: undo the spending of its claim."""


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
        *,
        targets: ClaimTargets | None = None,
        remote: RemoteClaims | None = None,
    ):
        self.db = db
        self.limits = limits
        self.authorize_claim = authorize_claim
        self.clients_of = clients_of
        self.clock = clock
        self.targets = targets  # needed by claim_for_user (the claim route)
        self.remote = remote  # None: users of other domains are not found
        # Keyed by target user: many requesters together get no more than one would.
        self.target_limiter = RateLimiter(limits.claims_per_target_per_minute)

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
        *,
        only_client: str | None = None,
    ) -> list[bytes]:
        """One package per client of the target user (clients without one are skipped; the
        requesting client itself is skipped when a user claims its own other clients'). With
        ``only_client``: that client's package alone (``404 client_not_found`` if the target
        user has no such client)."""
        now = int(self.clock())
        out: list[bytes] = []
        try:
            async with self.db.transaction() as conn:
                by_stranger = await self.authorize_claim(
                    conn, requester_user_uuid, target_user_uuid
                )
                # After authorisation, so a requester without a connection learns nothing of the
                # target's clients; the 404 rolls back, so an opening request keeps its one claim.
                clients = await self.clients_of(target_user_uuid, conn)
                if only_client is not None:
                    if only_client not in clients:
                        raise Problem(404, "client_not_found", "the user has no such client")
                    clients = [only_client]
                if requester_user_uuid != target_user_uuid:
                    # After authorisation, so refused requesters spend none of the target's budget;
                    # a 429 here rolls back, so an opening request keeps its one claim.
                    self.target_limiter.hit(target_user_uuid)
                reserve = self.limits.keypackage_reserve if by_stranger else 0
                for client_uuid in clients:
                    if only_client is None and client_uuid == requester_client_uuid:
                        continue
                    data = await self._claim_one(conn, client_uuid, cipher_suite, now, reserve)
                    if data is not None:
                        out.append(data)
                if by_stranger and not out:
                    raise _NothingHandedOut  # rolls back: the opening request keeps its one claim
        except _NothingHandedOut:
            return []
        return out

    async def claim_for_user(self, principal: Principal, user_id: str, cipher_suite: int) -> bytes:
        """The claim route: one KeyPackage per client of ``user_id`` of any domain (of another
        one: claimed on its server), as the MLS vector the client receives."""
        assert self.targets is not None, "built with targets (build_services)"
        if self.remote is not None and self.targets.remote_domain(user_id) is not None:
            return await self.remote.claim(principal, user_id, cipher_suite)
        target = await self.targets.find_user(user_id)
        if target is None:
            raise Problem(404, "user_not_found", f"no user {user_id}")
        items = await self.claim(
            principal.user_uuid, target.uuid, cipher_suite, principal.client_uuid
        )
        return join_mls_vector(items)

    async def claim_for_client(
        self, principal: Principal, user_id: str, client_uuid: str, cipher_suite: int
    ) -> bytes:
        """The claim route for one client of ``user_id`` (any domain, as ``claim_for_user``):
        a vector of that client's one KeyPackage, empty if it has none for the suite."""
        assert self.targets is not None, "built with targets (build_services)"
        client_uuid = client_uuid.strip().lower()
        if self.remote is not None and self.targets.remote_domain(user_id) is not None:
            return await self.remote.claim(principal, user_id, cipher_suite, client_uuid)
        target = await self.targets.find_user(user_id)
        if target is None:
            raise Problem(404, "user_not_found", f"no user {user_id}")
        items = await self.claim(
            principal.user_uuid, target.uuid, cipher_suite, only_client=client_uuid
        )
        return join_mls_vector(items)

    async def _claim_one(
        self, conn: AsyncConnection, client_uuid: str, cipher_suite: int, now: int, reserve: int
    ) -> bytes | None:
        # Expired packages are never handed out; they are dropped here as they are met.
        await conn.execute(
            sa.delete(key_packages).where(
                key_packages.c.client_uuid == client_uuid, key_packages.c.not_after <= now
            )
        )
        rows = (
            await conn.execute(
                sa.select(key_packages.c.id, key_packages.c.data, key_packages.c.last_resort)
                .where(
                    key_packages.c.client_uuid == client_uuid,
                    key_packages.c.cipher_suite == cipher_suite,
                )
                .order_by(key_packages.c.last_resort, key_packages.c.id)
                .with_for_update()
            )
        ).all()
        ordinary = sum(1 for r in rows if not r.last_resort)
        if reserve and ordinary <= reserve:
            # The reserve stays for users the target accepted; the last-resort package is
            # meant to be reused (RFC 9420, 16.8), so it is served and kept.
            last_resort = [r for r in rows if r.last_resort]
            return last_resort[0].data if last_resort else None
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
