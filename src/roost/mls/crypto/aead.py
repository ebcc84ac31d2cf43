"""AEAD algorithms (RFC 5116 / RFC 9180 ids).

Every AEAD key MLS derives is used once (ratchet keys, sender-data keys bound to a
ciphertext sample, Welcome and HPKE keys), so by default cipher objects are not kept: a
consumed key must not linger. Callers that really reuse a key (e.g. an application key
derived with the exporter) can pass ``cache=True``: a bounded cache of keyed cipher objects
saves the few microseconds of construction per call.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ..errors import CryptoError

AES_128_GCM = 0x0001
AES_256_GCM = 0x0002
CHACHA20_POLY1305 = 0x0003

_KEY_LEN = {AES_128_GCM: 16, AES_256_GCM: 32, CHACHA20_POLY1305: 32}
_CACHE_MAX = 512


class Aead:
    __slots__ = ("aead_id", "key_len", "nonce_len", "tag_len", "_factory", "_cache")

    def __init__(self, aead_id: int) -> None:
        if aead_id not in _KEY_LEN:
            raise ValueError(f"unknown AEAD id {aead_id}")
        self.aead_id = aead_id
        self.key_len = _KEY_LEN[aead_id]
        self.nonce_len = 12
        self.tag_len = 16
        self._factory = ChaCha20Poly1305 if aead_id == CHACHA20_POLY1305 else AESGCM
        self._cache: dict[bytes, AESGCM | ChaCha20Poly1305] = {}

    def cipher(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        c = self._cache.get(key)
        if c is None:
            if len(key) != self.key_len:
                raise CryptoError(f"AEAD key must be {self.key_len} bytes, got {len(key)}")
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # bounded; a cold miss is cheap
            c = self._cache[key] = self._factory(key)
        return c

    def fresh(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        """A cipher object that is NOT cached (the default for seal/open)."""
        if len(key) != self.key_len:
            raise CryptoError(f"AEAD key must be {self.key_len} bytes, got {len(key)}")
        return self._factory(key)

    def seal(
        self, key: bytes, nonce: bytes, aad: bytes, pt: bytes, *, cache: bool = False
    ) -> bytes:
        c = self.cipher(key) if cache else self.fresh(key)
        return c.encrypt(nonce, pt, aad)

    def open(
        self, key: bytes, nonce: bytes, aad: bytes, ct: bytes, *, cache: bool = False
    ) -> bytes:
        c = self.cipher(key) if cache else self.fresh(key)
        try:
            return c.decrypt(nonce, ct, aad)
        except InvalidTag:
            raise CryptoError("AEAD authentication failed") from None
        except ValueError as e:  # e.g. wrong nonce length
            raise CryptoError(f"AEAD open failed: {e}") from None
