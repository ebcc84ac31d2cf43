"""Seals for one use: a value the server can read back and a copy of the database cannot.

AES-256-GCM under a key derived from the server's seal key file (``seal_key.py``) for one
label (or a key derived elsewhere, ``Seal.with_key``: a keyed group's, delivery/group_keyring.py),
with a random nonce, so two seals of one value are unrelated. The label is also the
associated data, followed by ``bound_to`` (e.g. the row's id): a seal copied into another row
or used for another purpose does not open. Used for the Delivery Service's member rows, roles and
MLS state (delivery/at_rest.py), an asset's uploader (assets/service.py) and
a push registration's target (push/target_seal.py).
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .seal_key import SealKeyFile

_NONCE = 12


class Seal:
    def __init__(self, key_file: SealKeyFile | None, label: bytes) -> None:
        self._key_file = key_file
        self._label = label
        self._aead: AESGCM | None = None  # derived on first use: start-up reads no file

    @classmethod
    def with_key(cls, key: bytes, label: bytes) -> Seal:
        """A seal under ``key`` itself (derived elsewhere, e.g. from a group key)."""
        seal = cls(None, label)
        seal._aead = AESGCM(key)
        return seal

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            assert self._key_file is not None
            self._aead = AESGCM(self._key_file.derive(self._label))
        return self._aead

    def seal_bytes(self, plaintext: bytes, bound_to: bytes = b"") -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._cipher().encrypt(nonce, plaintext, self._label + bound_to)

    def open_bytes(self, sealed: bytes, bound_to: bytes = b"") -> bytes | None:
        """The plaintext, or None for a seal made under another key, label or row (or
        damaged)."""
        try:
            return self._cipher().decrypt(sealed[:_NONCE], sealed[_NONCE:], self._label + bound_to)
        except (InvalidTag, ValueError):
            return None

    def seal(self, text: str, bound_to: bytes = b"") -> bytes:
        return self.seal_bytes(text.encode(), bound_to)

    def open(self, sealed: bytes, bound_to: bytes = b"") -> str | None:
        raw = self.open_bytes(sealed, bound_to)
        return None if raw is None else raw.decode()
