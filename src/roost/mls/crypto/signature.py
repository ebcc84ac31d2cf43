"""Signature schemes of the MLS ciphersuites, on raw key bytes.

Encodings follow RFC 9420 and the test vectors: EdDSA keys are their native byte
strings; ECDSA public keys are uncompressed SEC1 points, private keys big-endian scalars of
the field size, and signatures DER (RFC 9420 section 5.1.2).
Parsed key objects are cached (bounded) because the same member keys verify many messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache, partial

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import CryptoError


class SignatureScheme:
    """Base: ``sign(priv, msg)``, ``verify(pub, msg, sig) -> bool``, key generation."""

    __slots__ = ("scheme_id",)

    def sign(self, priv: bytes, msg: bytes) -> bytes:
        raise NotImplementedError

    def verify(self, pub: bytes, msg: bytes, sig: bytes) -> bool:
        raise NotImplementedError

    def generate(self) -> tuple[bytes, bytes]:
        raise NotImplementedError

    def public_key(self, priv: bytes) -> bytes:
        raise NotImplementedError

    def check_public_key(self, pub: bytes) -> None:
        """``CryptoError`` unless ``pub`` is a public key of this scheme (length, encoding)."""
        raise NotImplementedError

    def signer(self, priv: bytes) -> Callable[[bytes], bytes]:
        """``sign`` bound to a parsed key, for callers that sign many messages with it."""
        return partial(self.sign, priv)

    def verifier(self, pub: bytes) -> Callable[[bytes, bytes], bool]:
        """``verify(msg, sig)`` bound to a parsed key (an invalid key verifies nothing)."""
        return lambda msg, sig: self.verify(pub, msg, sig)


_EdPrivateKey = ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
_EdPublicKey = ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


class EdDSA(SignatureScheme):
    __slots__ = ("_priv_cls", "_pub_cls", "_key_len", "_load_priv", "_load_pub")

    def __init__(
        self,
        scheme_id: int,
        priv_cls: type[ed25519.Ed25519PrivateKey] | type[ed448.Ed448PrivateKey],
        pub_cls: type[ed25519.Ed25519PublicKey] | type[ed448.Ed448PublicKey],
        key_len: int,
    ) -> None:
        self.scheme_id = scheme_id
        self._priv_cls = priv_cls
        self._pub_cls = pub_cls
        self._key_len = key_len

        def load_priv(priv: bytes) -> _EdPrivateKey:
            return priv_cls.from_private_bytes(priv)

        def load_pub(pub: bytes) -> _EdPublicKey:
            return pub_cls.from_public_bytes(pub)

        self._load_priv = lru_cache(maxsize=64)(load_priv)
        self._load_pub = lru_cache(maxsize=4096)(load_pub)

    def sign(self, priv: bytes, msg: bytes) -> bytes:
        try:
            key = self._load_priv(priv)
        except ValueError as e:
            raise CryptoError(f"invalid signature private key: {e}") from None
        return key.sign(msg)

    def verify(self, pub: bytes, msg: bytes, sig: bytes) -> bool:
        try:
            self._load_pub(pub).verify(sig, msg)
        except (InvalidSignature, ValueError):
            return False
        return True

    def signer(self, priv: bytes) -> Callable[[bytes], bytes]:
        try:
            return self._load_priv(priv).sign  # the key object's own method: no wrapper
        except ValueError as e:
            raise CryptoError(f"invalid signature private key: {e}") from None

    def check_public_key(self, pub: bytes) -> None:
        try:
            self._load_pub(pub)
        except ValueError as e:
            raise CryptoError(f"invalid signature public key: {e}") from None

    def verifier(self, pub: bytes) -> Callable[[bytes, bytes], bool]:
        try:
            key_verify = self._load_pub(pub).verify
        except ValueError:
            return lambda msg, sig: False

        def verify(msg: bytes, sig: bytes) -> bool:
            try:
                key_verify(sig, msg)
            except (InvalidSignature, ValueError):
                return False
            return True

        return verify

    def generate(self) -> tuple[bytes, bytes]:
        priv = os.urandom(self._key_len)
        return priv, self.public_key(priv)

    def public_key(self, priv: bytes) -> bytes:
        try:
            return self._load_priv(priv).public_key().public_bytes_raw()
        except ValueError as e:
            raise CryptoError(f"invalid signature private key: {e}") from None


class ECDSA(SignatureScheme):
    __slots__ = ("_curve", "_algorithm", "_scalar_len", "_load_priv", "_load_pub")

    def __init__(
        self,
        scheme_id: int,
        curve: ec.EllipticCurve,
        hash_alg: hashes.HashAlgorithm,
        scalar_len: int,
    ) -> None:
        self.scheme_id = scheme_id
        self._curve = curve
        self._algorithm = ec.ECDSA(hash_alg)
        self._scalar_len = scalar_len
        self._load_priv = lru_cache(maxsize=64)(self._parse_priv)
        self._load_pub = lru_cache(maxsize=4096)(self._parse_pub)

    def _parse_priv(self, priv: bytes) -> ec.EllipticCurvePrivateKey:
        # Some encoders drop leading zero bytes of the scalar (seen in the P-521 vectors).
        if not 0 < len(priv) <= self._scalar_len:
            raise ValueError(f"ECDSA private key must be at most {self._scalar_len} bytes")
        return ec.derive_private_key(int.from_bytes(priv, "big"), self._curve)

    def _parse_pub(self, pub: bytes) -> ec.EllipticCurvePublicKey:
        return ec.EllipticCurvePublicKey.from_encoded_point(self._curve, pub)

    def check_public_key(self, pub: bytes) -> None:
        # RFC 9420 section 5.1.1: an uncompressed point.
        if len(pub) != 1 + 2 * self._scalar_len or pub[:1] != b"\x04":
            raise CryptoError("invalid signature public key: not an uncompressed point")
        try:
            self._load_pub(pub)
        except ValueError as e:
            raise CryptoError(f"invalid signature public key: {e}") from None

    def sign(self, priv: bytes, msg: bytes) -> bytes:
        try:
            key = self._load_priv(priv)
        except ValueError as e:
            raise CryptoError(f"invalid signature private key: {e}") from None
        return key.sign(msg, self._algorithm)

    def verify(self, pub: bytes, msg: bytes, sig: bytes) -> bool:
        try:
            self._load_pub(pub).verify(sig, msg, self._algorithm)
        except (InvalidSignature, ValueError):
            return False
        return True

    def generate(self) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(self._curve)
        priv = key.private_numbers().private_value.to_bytes(self._scalar_len, "big")
        return priv, _point(key.public_key())

    def public_key(self, priv: bytes) -> bytes:
        try:
            return _point(self._load_priv(priv).public_key())
        except ValueError as e:
            raise CryptoError(f"invalid signature private key: {e}") from None


def _point(pub: ec.EllipticCurvePublicKey) -> bytes:
    return pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


# TLS SignatureScheme code points (RFC 8446), as used by RFC 9420 section 17.1.
ED25519 = EdDSA(0x0807, ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey, 32)
ED448 = EdDSA(0x0808, ed448.Ed448PrivateKey, ed448.Ed448PublicKey, 57)
ECDSA_P256_SHA256 = ECDSA(0x0403, ec.SECP256R1(), hashes.SHA256(), 32)
ECDSA_P384_SHA384 = ECDSA(0x0503, ec.SECP384R1(), hashes.SHA384(), 48)
ECDSA_P521_SHA512 = ECDSA(0x0603, ec.SECP521R1(), hashes.SHA512(), 66)
