"""Seals: a value only this server can read back, encrypted under a key kept outside the
database.

Some stored values must be readable by the running server but not by whoever holds a copy of
the database: the creating client of a queue (push looks it up), the uploader of an asset (its
quota is credited when the asset goes), a push registration's endpoint or device token. Each
is sealed with AES-256-GCM under one key in a file of the data directory (never in the
database), with a random nonce, so two seals of one value are unrelated and a copy of the
database alone cannot tell what they hold.

A seal names its purpose in the associated data, and may be bound to the row it is stored in
(``bound_to``, e.g. the asset id), so that a seal copied into another row or another column
does not open.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE = 12
OVERHEAD = _NONCE + 16  # nonce + GCM tag: a seal is this much longer than its plaintext


class Seal:
    """Seals for one purpose (the associated data) under the key in ``key_file``."""

    def __init__(self, key_file: Path, purpose: bytes) -> None:
        self._key_file = key_file
        self._purpose = purpose
        self._aead: AESGCM | None = None  # loaded on first use: start-up reads no file

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            self._aead = AESGCM(_load_or_create(self._key_file))
        return self._aead

    def seal_bytes(self, plaintext: bytes, bound_to: bytes = b"") -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._cipher().encrypt(nonce, plaintext, self._purpose + bound_to)

    def open_bytes(self, sealed: bytes, bound_to: bytes = b"") -> bytes | None:
        """The plaintext, or None for a seal made under another key or for another purpose or
        row (or damaged)."""
        try:
            return self._cipher().decrypt(
                sealed[:_NONCE], sealed[_NONCE:], self._purpose + bound_to
            )
        except (InvalidTag, ValueError):
            return None

    def seal(self, text: str, bound_to: bytes = b"") -> bytes:
        return self.seal_bytes(text.encode(), bound_to)

    def open(self, sealed: bytes, bound_to: bytes = b"") -> str | None:
        raw = self.open_bytes(sealed, bound_to)
        return None if raw is None else raw.decode()


def _load_or_create(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = _create(path)
    if len(key) != 32:
        raise RuntimeError(f"{path} must hold 32 bytes (the seal key)")
    return key


def _create(path: Path) -> bytes:
    """Write a new key without ever replacing one: processes starting together agree on the
    first one written (a hard link is atomic and fails if the name exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        key = path.read_bytes()
    finally:
        tmp.unlink()
    return key
