"""Encrypted assets, client side: encrypt a file with a fresh key, upload the ciphertext, and
share an ``AssetReference`` inside an MLS application message; recipients download by the
reference's capability and decrypt. The homeserver only ever holds ciphertext.

A reference names the asset (its domain and id), never a server URL: every client downloads
through its own homeserver (``GET /v1/assets/{domain}/{asset_id}``), which fetches another
domain's asset over federation, so the uploader's server never sees the recipient (docs/api.md,
"Assets"). References of the first format (``roost.asset.v1``, with a ``server`` URL) are still
read: the URL's host is taken as the domain, or the own domain if the URL is the own server's.

Encryption: AES-256-GCM with a fresh random key per asset, in 64 KiB segments so files stream
in both directions with bounded memory. Segment ``i`` uses the nonce ``i`` (11 bytes, big
endian) followed by a final-segment flag byte; the final segment always holds fewer than 64 KiB
(possibly none), so truncating, reordering or extending the ciphertext fails to decrypt. A key
is never reused, so the deterministic nonces are safe.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from roost.protocol.base64url import b64u, unb64u

from .errors import RoostError
from .session import Session, problem_error, segment

SEGMENT = 64 * 1024
TAG = 16
KEY_BYTES = 32
AAD = b"roost asset v1"
REFERENCE_TYPE = "roost.asset.v2"
LEGACY_REFERENCE_TYPE = "roost.asset.v1"  # named a server URL instead of a domain
CAPABILITY_HEADER = "Roost-Capability"
OCTET_STREAM = "application/octet-stream"


class AssetError(RoostError):
    """A downloaded asset does not decrypt with its reference (corrupted or tampered with)."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, "asset_corrupt", detail)


@dataclass(frozen=True, slots=True)
class AssetReference:
    """Everything a recipient needs to fetch and decrypt an asset. It contains the key: send it
    only inside an end-to-end encrypted (MLS) message."""

    domain: str  # the domain whose homeserver holds the ciphertext
    asset_id: str
    capability: str
    key: bytes
    size: int  # plaintext bytes
    expires_at: int
    media_type: str = OCTET_STREAM
    name: str | None = None
    # The server URL of a first-format reference (never written out again): lets a client
    # recognise its own server, whose address is not its domain.
    legacy_server: str | None = field(default=None, compare=False)

    @property
    def ciphertext_size(self) -> int:
        return ciphertext_size(self.size)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": REFERENCE_TYPE,
            "domain": self.domain,
            "asset_id": self.asset_id,
            "capability": self.capability,
            "key": b64u(self.key),
            "size": self.size,
            "expires_at": self.expires_at,
            "media_type": self.media_type,
        }
        if self.name is not None:
            out["name"] = self.name
        return out

    def to_bytes(self) -> bytes:
        """Compact JSON, ready to be the payload of an MLS application message."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, obj: Any) -> AssetReference:
        try:
            legacy_server: str | None = None
            if obj["type"] == REFERENCE_TYPE:
                domain = obj["domain"]
            elif obj["type"] == LEGACY_REFERENCE_TYPE:
                legacy_server = str(obj["server"])
                domain = urlsplit(legacy_server).hostname
            else:
                raise ValueError(f"not an asset reference: {obj['type']!r}")
            if not isinstance(domain, str) or not domain:
                raise ValueError("no domain")
            key = unb64u(obj["key"])
            size = obj["size"]
            if len(key) != KEY_BYTES or not isinstance(size, int) or size < 0:
                raise ValueError("bad key or size")
            return cls(
                domain=domain.lower(),
                asset_id=str(obj["asset_id"]),
                capability=str(obj["capability"]),
                key=key,
                size=size,
                expires_at=int(obj["expires_at"]),
                media_type=str(obj.get("media_type", OCTET_STREAM)),
                name=None if obj.get("name") is None else str(obj["name"]),
                legacy_server=legacy_server,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed asset reference: {e}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> AssetReference:
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise ValueError(f"malformed asset reference: {e}") from None
        return cls.from_json(obj)


# ---- segmented AES-GCM ------------------------------------------------------------------------
def ciphertext_size(plaintext_size: int) -> int:
    return plaintext_size + TAG * (plaintext_size // SEGMENT + 1)


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def encrypt_segments(key: bytes, plaintext: bytes) -> Iterator[bytes]:
    aead = AESGCM(key)
    view = memoryview(plaintext)
    full = len(plaintext) // SEGMENT
    for i in range(full):
        yield aead.encrypt(_nonce(i, False), view[i * SEGMENT : (i + 1) * SEGMENT], AAD)
    yield aead.encrypt(_nonce(full, True), view[full * SEGMENT :], AAD)


class Decryptor:
    """Incremental decryption: ``feed`` ciphertext as it arrives, then ``finish``."""

    PIECE = SEGMENT + TAG

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._buffer = bytearray()
        self._index = 0

    def _open(self, piece: bytes, final: bool) -> bytes:
        try:
            return self._aead.decrypt(_nonce(self._index, final), piece, AAD)
        except InvalidTag:
            raise AssetError("the asset does not decrypt with this reference") from None
        finally:
            self._index += 1

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        # A full piece is final only if nothing follows it, which we cannot know yet: keep it.
        while len(self._buffer) > self.PIECE:
            out += self._open(bytes(self._buffer[: self.PIECE]), False)
            del self._buffer[: self.PIECE]
        return bytes(out)

    def finish(self) -> bytes:
        if not TAG <= len(self._buffer) < self.PIECE:
            raise AssetError("the asset is truncated or padded")
        out = self._open(bytes(self._buffer), True)
        self._buffer.clear()
        return out


def _encrypt_file_segments(key: bytes, path: Path, size: int) -> Iterator[bytes]:
    """Like ``encrypt_segments`` over a file of ``size`` bytes, reading one segment at a time."""
    aead = AESGCM(key)
    full = size // SEGMENT
    with open(path, "rb") as f:
        for i in range(full):
            segment = f.read(SEGMENT)
            if len(segment) != SEGMENT:
                raise OSError(f"{path} changed while it was being uploaded")
            yield aead.encrypt(_nonce(i, False), segment, AAD)
        last = f.read(SEGMENT)
        if len(last) != size - full * SEGMENT:
            raise OSError(f"{path} changed while it was being uploaded")
        yield aead.encrypt(_nonce(full, True), last, AAD)


def encrypt(key: bytes, plaintext: bytes) -> bytes:
    return b"".join(encrypt_segments(key, plaintext))


def decrypt(key: bytes, ciphertext: bytes) -> bytes:
    d = Decryptor(key)
    return d.feed(ciphertext) + d.finish()


# ---- HTTP -----------------------------------------------------------------------------------
def _problem(resp: httpx.Response) -> RoostError:
    return problem_error(resp)


async def upload_asset(
    client: Session,
    data: bytes | os.PathLike[str] | str,
    *,
    media_type: str = OCTET_STREAM,
    name: str | None = None,
    expires_in: int | None = None,
) -> AssetReference:
    """Encrypt ``data`` (bytes, or a file path) with a fresh key and upload the ciphertext.

    Returns the reference to share inside an MLS message. Raises RoostError with the server's
    code (``asset_too_large``, ``quota_exceeded``, ``invalid_expiry``) when refused.
    """
    key = secrets.token_bytes(KEY_BYTES)
    params = {} if expires_in is None else {"expires_in": expires_in}
    if isinstance(data, bytes):
        size = len(data)
        plaintext = data

        def segments() -> Iterator[bytes]:
            return encrypt_segments(key, plaintext)
    else:
        # a file is read and encrypted segment by segment: memory stays bounded
        path = Path(data)
        size = (await asyncio.to_thread(path.stat)).st_size
        name = path.name if name is None else name

        def segments() -> Iterator[bytes]:
            return _encrypt_file_segments(key, path, size)

    async def body() -> AsyncIterator[bytes]:
        it = segments()
        try:
            while (segment := await asyncio.to_thread(next, it, None)) is not None:
                yield segment
        finally:
            it.close()  # type: ignore[attr-defined]  # the file, if the server cut us off

    resp: httpx.Response | None = None
    for _ in range(2):  # once more with a fresh token if it expired in between
        headers = {
            "Authorization": f"Bearer {await client.bearer_token()}",
            "Content-Type": OCTET_STREAM,
            "Content-Length": str(ciphertext_size(size)),
        }
        try:
            resp = await client.http.post(
                "/v1/assets", content=body(), headers=headers, params=params
            )
        except httpx.TransportError as e:
            raise RoostError(0, "transport_error", f"POST /v1/assets: {e!r}") from e
        if resp.status_code != 401:
            break
        client.state.token = ""
    assert resp is not None
    if resp.is_error:
        raise _problem(resp)
    out = resp.json()
    return AssetReference(
        domain=client.state.home_domain,
        asset_id=out["asset_id"],
        capability=out["capability"],
        key=key,
        size=size,
        expires_at=out["expires_at"],
        media_type=media_type,
        name=name,
    )


def _domain_of(client: Session, ref: AssetReference) -> str:
    """The domain holding the asset; a first-format reference to the own server's URL names
    the own domain (a server's URL need not be its domain)."""
    legacy = ref.legacy_server
    if legacy is not None and legacy.rstrip("/") == client.state.server.rstrip("/"):
        return client.state.home_domain
    return ref.domain


async def _stream(client: Session, ref: AssetReference) -> AsyncIterator[bytes]:
    domain = _domain_of(client, ref)
    path = f"/v1/assets/{segment(domain)}/{segment(ref.asset_id)}"
    # Another domain's asset is relayed by the home server for its own users only.
    authenticate = domain != client.state.home_domain
    headers = {CAPABILITY_HEADER: ref.capability}
    try:
        for attempt in range(2):  # once more with a fresh token if it expired in between
            if authenticate:
                headers["Authorization"] = f"Bearer {await client.bearer_token()}"
            async with client.http.stream("GET", path, headers=headers) as resp:
                if resp.status_code == 401 and authenticate and attempt == 0:
                    await resp.aread()
                    client.state.token = ""
                    continue
                if resp.is_error:
                    await resp.aread()
                    raise _problem(resp)
                d = Decryptor(ref.key)
                async for chunk in resp.aiter_bytes():
                    if plain := d.feed(chunk):
                        yield plain
                yield d.finish()
                return
    except httpx.TransportError as e:
        raise RoostError(0, "transport_error", f"GET {path}: {e!r}") from e


async def download_asset(client: Session, ref: AssetReference) -> bytes:
    """Fetch by capability through the client's own homeserver and decrypt. A wrong, guessed
    or expired capability raises RoostError(404, "asset_not_found"); tampering raises
    AssetError; another domain's server that cannot be reached, RoostError(502,
    "federation_unavailable"), and one this server does not federate with, (403,
    "federation_refused")."""
    parts = [chunk async for chunk in _stream(client, ref)]
    plaintext = b"".join(parts)
    if len(plaintext) != ref.size:
        raise AssetError("the asset's size differs from its reference")
    return plaintext


async def download_asset_to(
    client: Session, ref: AssetReference, path: os.PathLike[str] | str
) -> None:
    """Like ``download_asset`` but streams into ``path`` (written atomically: a failed or
    tampered download leaves no file behind)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    written = 0
    try:
        with open(tmp, "wb") as f:
            async for chunk in _stream(client, ref):
                written += len(chunk)
                await asyncio.to_thread(f.write, chunk)
        if written != ref.size:
            raise AssetError("the asset's size differs from its reference")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


async def delete_asset(client: Session, ref: AssetReference) -> None:
    """Withdraw an asset this user uploaded (recipients can no longer fetch it)."""
    await client.request("DELETE", f"/v1/assets/{ref.asset_id}")


async def asset_usage(client: Session) -> dict[str, int]:
    """The user's quota and the server's asset limits (``GET /v1/assets/usage``)."""
    return (await client.request("GET", "/v1/assets/usage")).json()
