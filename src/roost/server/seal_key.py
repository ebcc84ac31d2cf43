"""The server's seal key: 32 random bytes in a file of the data directory, never in the database.

What the server must be able to read back but a copy of the database must not — a queue's
creating client (queues/seal.py), who is in a group (delivery/at_rest.py) — is sealed under
keys derived from this one (HKDF-SHA256, one label per use), so a database copy or backup alone
reveals none of it. The operator, who holds the file, can open the seals (docs/privacy.md).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SealKeyFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None  # read on first use: start-up reads no file

    def key(self) -> bytes:
        if self._key is None:
            self._key = _load_or_create(self.path)
        return self._key

    def derive(self, label: bytes) -> bytes:
        """A 32-byte key for one use, independent of the keys of other labels."""
        return HKDF(hashes.SHA256(), 32, salt=None, info=label).derive(self.key())


def _load_or_create(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = _create(path)
    if len(key) != 32:
        raise RuntimeError(f"{path} must hold 32 bytes (the server's seal key)")
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
