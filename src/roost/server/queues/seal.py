"""The push seal: a queue's creating client, encrypted under a key kept outside the database.

Push must find the client of a queue whose item just arrived, while that client is offline;
nothing else may. The client's id is sealed with AES-256-GCM under a key in a file of the data
directory (never in the database), with a random nonce, so two queues of one client carry
unrelated seals and a copy of the database alone cannot tell whose a queue is.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_AAD = b"roost queue push seal v1"
_NONCE = 12


class QueueSeal:
    def __init__(self, key_file: Path) -> None:
        self._key_file = key_file
        self._aead: AESGCM | None = None  # loaded on first use: start-up reads no file

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            self._aead = AESGCM(_load_or_create(self._key_file))
        return self._aead

    def seal(self, client_uuid: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._cipher().encrypt(nonce, client_uuid.encode(), _AAD)

    def open(self, sealed: bytes) -> str | None:
        """The client's uuid, or None for a seal made under another key (or damaged)."""
        try:
            raw = self._cipher().decrypt(sealed[:_NONCE], sealed[_NONCE:], _AAD)
        except (InvalidTag, ValueError):
            return None
        return raw.decode()


def _load_or_create(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = _create(path)
    if len(key) != 32:
        raise RuntimeError(f"{path} must hold 32 bytes (the queue seal key)")
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
