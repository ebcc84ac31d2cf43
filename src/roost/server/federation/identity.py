"""This server's federation signing keys (Ed25519, table ``fed_keys``) and their rotation.

The newest unretired key signs. ``rotate()`` retires it and creates a new one; a retired key
stays published for ``grace_seconds`` so requests signed just before the rotation still verify.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from roost.protocol.base64url import b64u

from ..store import Database
from ..store.async_engine import AsyncConnection
from .tables import fed_keys

KEY_ALGORITHM = "ed25519"
FEDERATION_API = "/federation/v1"  # the prefix of every server-to-server route
DEFAULT_GRACE_SECONDS = 86400
# A running server re-reads its signing key this often, so a rotation made by
# `roost admin federation rotate-key` (another process) takes effect without a restart.
SIGNING_KEY_CACHE_SECONDS = 5.0
# pg_advisory_xact_lock key serialising key creation and rotation (a fixed value of our own).
KEYS_LOCK_KEY = 0x526F6F73744B6579  # "RoostKey"


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    private_key: Ed25519PrivateKey
    public_key: bytes  # raw 32 bytes


@dataclass(frozen=True, slots=True)
class PublishedKey:
    key_id: str
    public_key: bytes
    created_at: int
    retired_at: int | None

    def as_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "public_key": b64u(self.public_key),
            "algorithm": KEY_ALGORITHM,
            "retired_at": self.retired_at,
        }


def new_key_row(now: int) -> dict[str, object]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {
        "key_id": f"{KEY_ALGORITHM}:{secrets.token_hex(4)}",
        "private_key": private.private_bytes_raw(),
        "public_key": public,
        "created_at": now,
        "retired_at": None,
    }


class ServerIdentity:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], float] = time.time,
        grace_seconds: int = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self.db = db
        self.clock = clock
        self.grace_seconds = grace_seconds
        self._cached: SigningKey | None = None
        self._loaded_at = 0.0

    async def ensure_key(self) -> SigningKey:
        """The current signing key, created on the first start (race-safe across processes)."""
        key = await self._load_current()
        if key is not None:
            return key
        async with self.db.transaction() as conn:
            # Several processes may start together on one database: the check and the insert
            # run under the writer lock (SQLite) or an advisory lock (PostgreSQL), so exactly
            # one of them creates the key and the others read it.
            await _lock_keys(conn, self.db.is_sqlite)
            current = await conn.execute(
                sa.select(fed_keys.c.key_id).where(fed_keys.c.retired_at.is_(None)).limit(1)
            )
            if current.first() is None:
                await conn.execute(sa.insert(fed_keys).values(**new_key_row(int(self.clock()))))
        key = await self._load_current()
        assert key is not None
        return key

    async def signing_key(self) -> SigningKey:
        """The key that signs outbound requests (cached briefly; see SIGNING_KEY_CACHE_SECONDS)."""
        now = time.monotonic()
        if self._cached is not None and now - self._loaded_at < SIGNING_KEY_CACHE_SECONDS:
            return self._cached
        return await self.ensure_key()

    async def rotate(self) -> SigningKey:
        """Retire the current key (still published for the grace period) and sign with a new one."""
        now = int(self.clock())
        row = new_key_row(now)
        async with self.db.transaction() as conn:
            await _lock_keys(conn, self.db.is_sqlite)
            await conn.execute(
                sa.update(fed_keys).where(fed_keys.c.retired_at.is_(None)).values(retired_at=now)
            )
            await conn.execute(sa.insert(fed_keys).values(**row))
        self._cached = None
        key = await self._load_current()
        assert key is not None
        return key

    async def published(self) -> list[PublishedKey]:
        """Keys others may verify with: the current one and those retired within the grace."""
        cutoff = int(self.clock()) - self.grace_seconds
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(fed_keys)
                .where(sa.or_(fed_keys.c.retired_at.is_(None), fed_keys.c.retired_at > cutoff))
                .order_by(fed_keys.c.created_at.desc(), fed_keys.c.key_id)
            )
            return [
                PublishedKey(r.key_id, bytes(r.public_key), r.created_at, r.retired_at)
                for r in rows
            ]

    async def document(self) -> dict[str, object]:
        """The ``federation`` member of ``/.well-known/roost`` (and of ``/federation/v1/keys``):
        where the federation API is and the published keys."""
        return {"api": FEDERATION_API, "keys": [k.as_json() for k in await self.published()]}

    async def current(self) -> SigningKey | None:
        """The current signing key, or None before the first start."""
        return await self._load_current()

    async def _load_current(self) -> SigningKey | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(fed_keys)
                    .where(fed_keys.c.retired_at.is_(None))
                    .order_by(fed_keys.c.created_at.desc(), fed_keys.c.key_id.desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        key = SigningKey(
            row.key_id,
            Ed25519PrivateKey.from_private_bytes(bytes(row.private_key)),
            bytes(row.public_key),
        )
        self._cached, self._loaded_at = key, time.monotonic()
        return key


async def _lock_keys(conn: AsyncConnection, is_sqlite: bool) -> None:
    if not is_sqlite:  # SQLite: the transaction already holds the write lock (BEGIN IMMEDIATE)
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": KEYS_LOCK_KEY})
