"""The push seal: a queue's creating client, encrypted under a key kept outside the database.

Push must find the client of a queue whose item just arrived, while that client is offline;
nothing else may. The client's id is sealed with AES-256-GCM under a key in a file of the data
directory (never in the database), with a random nonce, so two queues of one client carry
unrelated seals and a copy of the database alone cannot tell whose a queue is.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..seal_key import SealKeyFile

_AAD = b"roost queue push seal v1"
_NONCE = 12


class QueueSeal:
    def __init__(self, key_file: SealKeyFile) -> None:
        self._key_file = key_file
        self._aead: AESGCM | None = None  # loaded on first use: start-up reads no file

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            self._aead = AESGCM(
                self._key_file.key()
            )  # the raw key: seals made before it was shared
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
