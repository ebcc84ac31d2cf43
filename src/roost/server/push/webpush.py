"""Web Push (RFC 8030) with message encryption (RFC 8291, aes128gcm) and VAPID (RFC 8292).

Own code on ``cryptography``: the payload is one short record, so the whole of RFC 8188 that
is needed is one AES-GCM seal; pywebpush would add two more dependencies for that.
UnifiedPush distributors accept the same requests.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC

from roost.protocol.base64url import b64u

from .jose import es256_jwt

RECORD_SIZE = 4096
VAPID_TTL_SECONDS = 12 * 3600  # RFC 8292: at most 24 hours


def _hmac(key: bytes, data: bytes) -> bytes:
    h = HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def _hkdf(salt: bytes, ikm: bytes, info: bytes, n: int) -> bytes:
    # One-block HKDF (n <= 32): extract, then the first expand block.
    return _hmac(_hmac(salt, ikm), info + b"\x01")[:n]


def encrypt(ua_public: bytes, auth_secret: bytes, plaintext: bytes) -> bytes:
    """RFC 8291 section 3.4: one aes128gcm record, keyid = the ephemeral public key."""
    ua_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    as_priv = ec.generate_private_key(ec.SECP256R1())
    as_public = as_priv.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    ecdh_secret = as_priv.exchange(ec.ECDH(), ua_key)
    ikm = _hkdf(auth_secret, ecdh_secret, b"WebPush: info\x00" + ua_public + as_public, 32)
    salt = os.urandom(16)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: the last record
    header = salt + RECORD_SIZE.to_bytes(4, "big") + bytes((len(as_public),)) + as_public
    return header + record


@dataclass(frozen=True, slots=True)
class Vapid:
    """The application server's VAPID identity (a P-256 key and a contact URI)."""

    key: ec.EllipticCurvePrivateKey
    subject: str

    @classmethod
    def from_private_bytes(cls, raw: bytes, subject: str) -> Vapid:
        return cls(ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1()), subject)

    @property
    def public_key(self) -> bytes:
        """Uncompressed point: the ``applicationServerKey`` a browser subscribes with."""
        return self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + VAPID_TTL_SECONDS,  # wall clock: the push service checks it
            "sub": self.subject,
        }
        return f"vapid t={es256_jwt(self.key, claims)}, k={b64u(self.public_key)}"


def generate_vapid_private_bytes() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_numbers().private_value.to_bytes(32, "big")
