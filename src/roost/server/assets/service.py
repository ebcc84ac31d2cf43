"""Asset service: streamed uploads under a size cap and a per-user quota, capability downloads,
deletion by the uploader, expiry and the garbage-collection sweep, and downloads of assets held
by other domains, relayed for this server's users (``open_anywhere``, see remote.py).

Capabilities: each asset has a public 128-bit id and a 256-bit secret; only SHA-256(secret) is
stored and it is compared in constant time. A wrong secret, an unknown id, an unfinished upload
and an expired asset all answer the same 404, so nothing can be probed.

Quota: a user's finished assets are counted in ``asset_usage``; an upload reserves its bytes
with one conditional UPDATE (``used + n <= quota``) at the end, which is atomic on both engines
and across processes. The stream is also cut as soon as it exceeds what was free at its start.

Rows are the source of truth for blobs: a row is written (not ready, short expiry) before the
blob, so a crash mid-upload leaves a row the sweep later collects together with any blob.

Uploader: no column names it. Each row keeps the uploading user sealed under the server's seal
key file (``seal.py``), bound to the asset id; the server opens it when the asset goes (to
credit the quota), when a user deletes an asset (is it theirs?) and when an account is deleted
(a scan of the seals, on a rare event, instead of a stored link). The uploading client is not
kept at all: nothing needs it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

import sqlalchemy as sa

from roost.protocol.base64url import b64u, unb64u

from ..config import is_valid_domain
from ..errors import Problem
from ..seal import Seal
from ..seal_key import SealKeyFile
from ..store import Database
from ..store.async_engine import AsyncConnection
from ..store.dialect_insert import dialect_insert
from .remote import RemoteAssetSource
from .storage import Blob, BlobStore, FilesystemStore
from .tables import asset_usage, assets

log = logging.getLogger("roost.server.assets")

SWEEP_BATCH = 500
_NOT_FOUND_DETAIL = "no such asset, or the capability is wrong or expired"
# The associated data of an asset's owner seal, which is bound to the asset id; the migration
# that sealed the owners of existing assets (store/migrations, 0016) uses the same.
OWNER_SEAL_LABEL = b"roost asset owner seal v1:"
# Compared against when the id is unknown, so that path costs the same as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"roost asset: no such capability").digest()


@dataclass(frozen=True, slots=True)
class AssetSettings:
    max_asset_bytes: int
    quota_bytes: int
    default_ttl_seconds: int
    max_ttl_seconds: int
    upload_timeout_seconds: int = 3600  # an upload still unfinished after this is collected
    # A relayed download of another domain's asset is cut off after this long in all: a remote
    # dripping bytes must not hold a connection of this server for ever.
    relay_timeout_seconds: int = 600


@dataclass(frozen=True, slots=True)
class Uploaded:
    asset_id: str
    capability: str  # base64url (no padding) of the 32-byte secret
    size: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class Usage:
    used_bytes: int
    quota_bytes: int


class _CapExceeded(Exception):
    """Raised from inside the upload stream to make the backend abandon the blob."""


def _hash_capability(capability: str) -> bytes | None:
    try:
        secret = unb64u(capability)
    except ValueError:
        return None
    return hashlib.sha256(secret).digest() if len(secret) == 32 else None


def _is_asset_id(asset_id: str) -> bool:
    return len(asset_id) == 32 and all(c in "0123456789abcdef" for c in asset_id)


def _not_found() -> Problem:
    return Problem(404, "asset_not_found", _NOT_FOUND_DETAIL)


class AssetService:
    def __init__(
        self,
        db: Database,
        store: BlobStore,
        settings: AssetSettings,
        seal_key: SealKeyFile,
        clock: Callable[[], float] = time.time,
        *,
        home_domain: str = "",
        remote: RemoteAssetSource | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.owner_seal = Seal(seal_key, OWNER_SEAL_LABEL)
        self.settings = settings
        self.clock = clock
        self.home_domain = home_domain.lower()
        self.remote = remote

    # ---- queries -------------------------------------------------------------------------
    async def usage(self, user_uuid: str) -> Usage:
        async with self.db.engine.connect() as conn:
            used = await conn.scalar(
                sa.select(asset_usage.c.used_bytes).where(asset_usage.c.user_uuid == user_uuid)
            )
        return Usage(int(used or 0), self.settings.quota_bytes)

    # ---- upload ----------------------------------------------------------------------------
    async def upload(
        self,
        user_uuid: str,
        chunks: AsyncIterable[bytes],
        *,
        declared_length: int | None = None,
        ttl_seconds: int | None = None,
    ) -> Uploaded:
        s = self.settings
        ttl = s.default_ttl_seconds if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= s.max_ttl_seconds:
            raise Problem(
                400, "invalid_expiry", f"expires_in must be between 1 and {s.max_ttl_seconds}"
            )
        free = max(0, s.quota_bytes - (await self.usage(user_uuid)).used_bytes)
        if declared_length is not None:
            self._check_size(declared_length, free)
        cap = min(s.max_asset_bytes, free)

        asset_id = secrets.token_hex(16)
        secret = secrets.token_bytes(32)
        now = int(self.clock())
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.insert(assets).values(
                    id=asset_id,
                    owner_seal=self.owner_seal.seal(user_uuid, asset_id.encode()),
                    capability_hash=hashlib.sha256(secret).digest(),
                    size=0,
                    ready=False,
                    created_at=now,
                    expires_at=now + s.upload_timeout_seconds,
                )
            )
        try:
            size = await self.store.put(asset_id, self._capped(chunks, cap))
        except _CapExceeded:
            await self._forget_pending(asset_id)
            self._check_size(cap + 1, free)
            raise AssertionError("unreachable") from None
        except BaseException:
            await self._forget_pending(asset_id)
            raise

        expires_at = int(self.clock()) + ttl
        try:
            await self._finish(asset_id, user_uuid, size, expires_at)
        except BaseException:
            await self.store.delete(asset_id)
            await self._forget_pending(asset_id)
            raise
        capability = b64u(secret)
        return Uploaded(asset_id, capability, size, expires_at)

    def _check_size(self, size: int, free: int) -> None:
        if size > self.settings.max_asset_bytes:
            raise Problem(
                413,
                "asset_too_large",
                f"an asset may hold at most {self.settings.max_asset_bytes} bytes",
            )
        if size > free:
            raise Problem(
                413,
                "quota_exceeded",
                f"the upload exceeds the {free} bytes left of your asset quota",
                extra={"quota_bytes": self.settings.quota_bytes},
            )

    @staticmethod
    async def _capped(chunks: AsyncIterable[bytes], cap: int) -> AsyncIterator[bytes]:
        # Enforced while streaming: the upload is cut at the first byte over the cap.
        seen = 0
        async for chunk in chunks:
            seen += len(chunk)
            if seen > cap:
                raise _CapExceeded
            if chunk:
                yield chunk

    async def _finish(self, asset_id: str, user_uuid: str, size: int, expires_at: int) -> None:
        async with self.db.transaction() as conn:
            await self._ensure_usage_row(conn, user_uuid)
            reserved = await conn.execute(
                sa.update(asset_usage)
                .where(
                    asset_usage.c.user_uuid == user_uuid,
                    asset_usage.c.used_bytes + size <= self.settings.quota_bytes,
                )
                .values(used_bytes=asset_usage.c.used_bytes + size)
            )
            if reserved.rowcount != 1:  # a concurrent upload took the room first
                raise Problem(
                    413,
                    "quota_exceeded",
                    "the upload exceeds what is left of your asset quota",
                    extra={"quota_bytes": self.settings.quota_bytes},
                )
            finished = await conn.execute(
                sa.update(assets)
                .where(assets.c.id == asset_id, assets.c.ready.is_(False))
                .values(ready=True, size=size, expires_at=expires_at)
            )
            if finished.rowcount != 1:  # the sweep collected an upload that outlived its timeout
                raise Problem(408, "upload_timeout", "the upload took too long")

    async def _ensure_usage_row(self, conn: AsyncConnection, user_uuid: str) -> None:
        insert = dialect_insert(conn, asset_usage)
        await conn.execute(
            insert.values(user_uuid=user_uuid, used_bytes=0).on_conflict_do_nothing(
                index_elements=[asset_usage.c.user_uuid]
            )
        )

    async def _forget_pending(self, asset_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.delete(assets).where(assets.c.id == asset_id, assets.c.ready.is_(False))
            )

    # ---- download --------------------------------------------------------------------------
    async def open(self, asset_id: str, capability: str) -> Blob:
        """The ciphertext, if ``capability`` is the asset's and it has not expired."""
        presented = _hash_capability(capability)
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(assets.c.capability_hash, assets.c.ready, assets.c.expires_at).where(
                        assets.c.id == asset_id
                    )
                )
            ).first()
        stored = row.capability_hash if row is not None else _DUMMY_HASH
        matches = hmac.compare_digest(stored, presented or b"\0" * 32)
        if (
            row is None
            or presented is None
            or not matches
            or not row.ready
            or row.expires_at <= self.clock()
        ):
            raise _not_found()
        blob = await self.store.get(asset_id)
        if blob is None:
            # the asset id stays out of the log (docs/operations.md, "Logs")
            log.warning("an asset has a row but no blob in the %s store", self.store.kind)
            raise _not_found()
        return blob

    def is_local(self, domain: str) -> bool:
        return domain.strip().lower() == self.home_domain

    async def open_anywhere(self, domain: str, asset_id: str, capability: str) -> Blob:
        """The ciphertext of an asset of any domain: ours from the store, another's fetched
        from its homeserver and relayed under this server's size cap and relay timeout."""
        if self.is_local(domain):
            return await self.open(asset_id, capability)
        domain = domain.strip().lower()
        if not is_valid_domain(domain):
            raise Problem(400, "invalid_request", "not a valid domain name")
        # Nothing a remote could accept is sent on (ids are 128-bit hex, secrets 256-bit):
        # the answer would be the same 404, without a federation request.
        if self.remote is None or not _is_asset_id(asset_id) or not _hash_capability(capability):
            raise _not_found()
        return await self.remote.open(
            domain,
            asset_id,
            capability,
            max_bytes=self.settings.max_asset_bytes,
            timeout=self.settings.relay_timeout_seconds,
        )

    # ---- deletion and collection ---------------------------------------------------------
    def _owner(self, asset_id: str, sealed: bytes) -> str | None:
        """The uploading user, or None if the seal does not open (another seal key)."""
        return self.owner_seal.open(bytes(sealed), asset_id.encode())

    async def delete(self, user_uuid: str, asset_id: str) -> None:
        """The uploader (any client of the user) withdraws an asset: downloads stop at once.
        Someone else's asset answers the same 404 as an unknown one."""
        live = (
            assets.c.id == asset_id,
            assets.c.ready.is_(True),
            assets.c.expires_at > int(self.clock()),
        )
        async with self.db.transaction() as conn:
            sealed = await conn.scalar(sa.select(assets.c.owner_seal).where(*live))
            if sealed is None or self._owner(asset_id, sealed) != user_uuid:
                raise _not_found()
            expired = await conn.execute(sa.update(assets).where(*live).values(expires_at=0))
        if expired.rowcount != 1:  # expired or collected meanwhile
            raise _not_found()
        try:
            await self._collect([asset_id])
        except Exception as e:  # the row is expired: the next sweep finishes the job
            # the type only: a store's error text can quote the blob's path, i.e. the asset id
            log.warning(
                "collecting a deleted asset failed (%s); the sweep will retry", type(e).__name__
            )

    async def sweep(self) -> int:
        """Collect expired assets and abandoned uploads (blob first, then the row and the
        quota); safe to run in several processes at once. Returns how many were collected."""
        total = 0
        while True:
            async with self.db.engine.connect() as conn:
                ids = (
                    await conn.scalars(
                        sa.select(assets.c.id)
                        .where(assets.c.expires_at <= int(self.clock()))
                        .limit(SWEEP_BATCH)
                    )
                ).all()
            total += await self._collect(list(ids))
            if len(ids) < SWEEP_BATCH:
                break
        if isinstance(self.store, FilesystemStore):
            await self.store.sweep_temporary(self.clock() - self.settings.upload_timeout_seconds)
        return total

    async def _collect(self, ids: list[str]) -> int:
        for asset_id in ids:
            await self.store.delete(asset_id)
        removed = 0
        now = int(self.clock())
        async with self.db.transaction() as conn:
            for asset_id in ids:
                row = (
                    await conn.execute(
                        sa.delete(assets)
                        .where(assets.c.id == asset_id, assets.c.expires_at <= now)
                        .returning(assets.c.owner_seal, assets.c.size, assets.c.ready)
                    )
                ).first()
                if row is None:  # another process collected it first
                    continue
                removed += 1
                if not (row.ready and row.size):
                    continue
                owner = self._owner(asset_id, row.owner_seal)
                if owner is None:
                    # Sealed under another key (the key file was replaced): the bytes cannot
                    # be credited back to anyone. No id in the log.
                    log.warning("an expired asset's owner seal does not open; quota not credited")
                    continue
                await conn.execute(
                    sa.update(asset_usage)
                    .where(asset_usage.c.user_uuid == owner)
                    .values(used_bytes=asset_usage.c.used_bytes - row.size)
                )
        return removed

    async def delete_user_assets(
        self, conn: AsyncConnection, user_uuid: str, _clients: list[str]
    ) -> None:
        """Deletion hook (inside the AS's transaction): a deleted user's assets expire now and
        the next sweep removes their blobs; blob I/O never runs inside the transaction.

        No row names an asset's uploader: the seals of the unexpired assets are opened one by
        one (a scan on a rare event, instead of a stored link)."""
        rows = await conn.execute(
            sa.select(assets.c.id, assets.c.owner_seal).where(
                assets.c.expires_at > int(self.clock())
            )
        )
        doomed = [
            asset_id for asset_id, sealed in rows if self._owner(asset_id, sealed) == user_uuid
        ]
        for i in range(0, len(doomed), SWEEP_BATCH):
            await conn.execute(
                sa.update(assets)
                .where(assets.c.id.in_(doomed[i : i + SWEEP_BATCH]))
                .values(expires_at=0)
            )
        await conn.execute(sa.delete(asset_usage).where(asset_usage.c.user_uuid == user_uuid))

    async def close(self) -> None:
        await self.store.close()
