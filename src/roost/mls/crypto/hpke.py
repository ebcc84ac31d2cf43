"""HPKE (RFC 9180), base mode only, written on ``cryptography`` primitives.

Why our own: the pinned ``cryptography`` HPKE API has no X448 KEM and no secret export,
both of which MLS needs (ciphersuites 4/6; external init uses the exporter).

Public API:
- ``DHKEM`` instances ``DHKEM_P256``, ``DHKEM_P384``, ``DHKEM_P521``, ``DHKEM_X25519``,
  ``DHKEM_X448`` with ``derive_key_pair(ikm)``, ``generate_key_pair()``, ``public_key(sk)``,
  ``encap(pk) -> (shared_secret, enc)``, ``decap(enc, sk)``. Keys are serialized bytes
  (``SerializePublicKey`` / ``SerializePrivateKey``).
- ``Hpke(kem, kdf_id, aead_id)`` with ``seal``, ``open``, ``export_sender``,
  ``export_receiver`` (single-shot, sequence number 0).
Every failure raises ``CryptoError``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, Generic, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import CryptoError
from . import kdf
from .aead import Aead

MODE_BASE = b"\x00"
_VERSION = b"HPKE-v1"

KDF_HKDF_SHA256 = 0x0001
KDF_HKDF_SHA384 = 0x0002
KDF_HKDF_SHA512 = 0x0003
_KDF_HASH = {
    KDF_HKDF_SHA256: ("sha256", 32),
    KDF_HKDF_SHA384: ("sha384", 48),
    KDF_HKDF_SHA512: ("sha512", 64),
}


class _Labeled:
    """LabeledExtract / LabeledExpand (RFC 9180 section 4) for one suite_id and hash."""

    __slots__ = ("suite_id", "hash_name", "hash_len")

    def __init__(self, suite_id: bytes, hash_name: str, hash_len: int) -> None:
        self.suite_id = suite_id
        self.hash_name = hash_name
        self.hash_len = hash_len

    def extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return kdf.extract(
            self.hash_name, self.hash_len, salt, _VERSION + self.suite_id + label + ikm
        )

    def expand(self, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
        labeled_info = n.to_bytes(2, "big") + _VERSION + self.suite_id + label + info
        return kdf.expand(self.hash_name, self.hash_len, prk, labeled_info, n)


# A KEM's private and public key objects (``cryptography`` classes; each group has its own).
_Priv = TypeVar("_Priv")
_Pub = TypeVar("_Pub")


class DHKEM(Generic[_Priv, _Pub]):
    """DHKEM(Group, HKDF) from RFC 9180 section 4.1.

    Subclasses supply the group: key loading (set as attributes, so that public keys can be
    cached per instance), serialization, generation and the DH itself."""

    _load_sk: Callable[[bytes], _Priv]  # raises ValueError / TypeError on a bad key
    _load_pk: Callable[[bytes], _Pub]

    def __init__(
        self, kem_id: int, n_secret: int, n_enc: int, n_sk: int, kdf_id: int, name: str
    ) -> None:
        self.kem_id = kem_id
        self.n_secret = n_secret
        self.n_enc = n_enc
        self.n_pk = n_enc
        self.n_sk = n_sk
        self.name = name
        hash_name, hash_len = _KDF_HASH[kdf_id]
        self._labeled = _Labeled(b"KEM" + kem_id.to_bytes(2, "big"), hash_name, hash_len)

    # Group-specific hooks -------------------------------------------------------------
    def _serialize_pk(self, pub: _Pub) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _serialize_sk(self, key: _Priv) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _generate(self) -> _Priv:  # pragma: no cover - abstract
        raise NotImplementedError

    def _public_of(self, key: _Priv) -> _Pub:  # pragma: no cover - abstract
        raise NotImplementedError

    def _exchange(self, key: _Priv, pub: _Pub) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sk_from_dkp_prk(self, dkp_prk: bytes) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    # Public API -----------------------------------------------------------------------
    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        dkp_prk = self._labeled.extract(b"", b"dkp_prk", ikm)
        sk = self._sk_from_dkp_prk(dkp_prk)
        return sk, self.public_key(sk)

    def generate_key_pair(self) -> tuple[bytes, bytes]:
        key = self._generate()
        return self._serialize_sk(key), self._serialize_pk(self._public_of(key))

    def public_key(self, sk: bytes) -> bytes:
        return self._serialize_pk(self._public_of(self._private(sk)))

    def check_public_key(self, pk: bytes) -> None:
        """``CryptoError`` unless ``pk`` is a public key of this KEM (length and encoding)."""
        self._public(pk)

    def _private(self, sk: bytes) -> _Priv:
        try:
            return self._load_sk(sk)
        except (ValueError, TypeError) as e:
            raise CryptoError(f"invalid {self.name} private key: {e}") from None

    def _public(self, pk: bytes) -> _Pub:
        try:
            return self._load_pk(pk)
        except (ValueError, TypeError) as e:
            raise CryptoError(f"invalid {self.name} public key: {e}") from None

    def _dh(self, key: _Priv, pub: _Pub) -> bytes:
        try:
            return self._exchange(key, pub)
        except ValueError as e:  # e.g. X25519 all-zero output (small-order point)
            raise CryptoError(f"{self.name} key exchange failed: {e}") from None

    def _extract_and_expand(self, dh: bytes, kem_context: bytes) -> bytes:
        eae_prk = self._labeled.extract(b"", b"eae_prk", dh)
        return self._labeled.expand(eae_prk, b"shared_secret", kem_context, self.n_secret)

    def encap(self, pk_r: bytes) -> tuple[bytes, bytes]:
        pub_r = self._public(pk_r)
        eph = self._generate()
        enc = self._serialize_pk(self._public_of(eph))
        dh = self._dh(eph, pub_r)
        return self._extract_and_expand(dh, enc + pk_r), enc

    def decap(self, enc: bytes, sk_r: bytes) -> bytes:
        key = self._private(sk_r)
        pub_e = self._public(enc)
        dh = self._dh(key, pub_e)
        pk_r = self._serialize_pk(self._public_of(key))
        return self._extract_and_expand(dh, enc + pk_r)


# A KEM of any group: its key objects never leave it (its API speaks serialized bytes).
AnyDHKEM = DHKEM[Any, Any]


class _RawPublicKey(Protocol):
    def public_bytes_raw(self) -> bytes: ...


_XPub = TypeVar("_XPub", bound=_RawPublicKey)


class _XPrivateKey(Protocol[_XPub]):
    """What X25519 and X448 private keys share (each pairs with its own public key class)."""

    def public_key(self) -> _XPub: ...
    def private_bytes_raw(self) -> bytes: ...
    def exchange(self, peer_public_key: _XPub, /) -> bytes: ...


class _XDHKEM(DHKEM[_XPrivateKey[_XPub], _XPub]):
    def __init__(
        self,
        kem_id: int,
        n_secret: int,
        n_key: int,
        kdf_id: int,
        name: str,
        load_sk: Callable[[bytes], _XPrivateKey[_XPub]],
        load_pk: Callable[[bytes], _XPub],
        generate: Callable[[], _XPrivateKey[_XPub]],
    ) -> None:
        super().__init__(kem_id, n_secret, n_key, n_key, kdf_id, name)
        # Private keys are not cached: old path keys must not outlive their epoch.
        self._load_sk = load_sk
        self._load_pk = lru_cache(maxsize=1024)(load_pk)
        self._generate_sk = generate

    def _serialize_pk(self, pub: _XPub) -> bytes:
        return pub.public_bytes_raw()

    def _serialize_sk(self, key: _XPrivateKey[_XPub]) -> bytes:
        return key.private_bytes_raw()

    def _generate(self) -> _XPrivateKey[_XPub]:
        return self._generate_sk()

    def _public_of(self, key: _XPrivateKey[_XPub]) -> _XPub:
        return key.public_key()

    def _exchange(self, key: _XPrivateKey[_XPub], pub: _XPub) -> bytes:
        return key.exchange(pub)

    def _sk_from_dkp_prk(self, dkp_prk: bytes) -> bytes:
        return self._labeled.expand(dkp_prk, b"sk", b"", self.n_sk)


class _ECDHKEM(DHKEM[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]):
    def __init__(
        self,
        kem_id: int,
        n_secret: int,
        n_sk: int,
        kdf_id: int,
        name: str,
        curve: ec.EllipticCurve,
        bitmask: int,
    ) -> None:
        super().__init__(kem_id, n_secret, 1 + 2 * n_sk, n_sk, kdf_id, name)
        self._curve = curve
        self._bitmask = bitmask
        self._order = _ORDERS[curve.name]
        self._load_sk = self._parse_sk  # not cached, see _XDHKEM
        self._load_pk = lru_cache(maxsize=1024)(self._parse_pk)

    def _parse_sk(self, sk: bytes) -> ec.EllipticCurvePrivateKey:
        # Some encoders drop leading zero bytes of the scalar (seen in the P-521 vectors).
        if not 0 < len(sk) <= self.n_sk:
            raise ValueError(f"private key must be at most {self.n_sk} bytes")
        return ec.derive_private_key(int.from_bytes(sk, "big"), self._curve)

    def _parse_pk(self, pk: bytes) -> ec.EllipticCurvePublicKey:
        if len(pk) != self.n_pk or pk[0] != 4:
            raise ValueError("public key must be an uncompressed point")
        return ec.EllipticCurvePublicKey.from_encoded_point(self._curve, pk)

    def _serialize_pk(self, pub: ec.EllipticCurvePublicKey) -> bytes:
        return pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def _serialize_sk(self, key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_numbers().private_value.to_bytes(self.n_sk, "big")

    def _generate(self) -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(self._curve)

    def _public_of(self, key: ec.EllipticCurvePrivateKey) -> ec.EllipticCurvePublicKey:
        return key.public_key()

    def _exchange(self, key: ec.EllipticCurvePrivateKey, pub: ec.EllipticCurvePublicKey) -> bytes:
        return key.exchange(ec.ECDH(), pub)

    def _sk_from_dkp_prk(self, dkp_prk: bytes) -> bytes:
        # RFC 9180 section 7.1.3: rejection sampling with a bitmask on the first byte.
        for counter in range(256):
            candidate = bytearray(
                self._labeled.expand(dkp_prk, b"candidate", bytes((counter,)), self.n_sk)
            )
            candidate[0] &= self._bitmask
            sk = int.from_bytes(candidate, "big")
            if 0 < sk < self._order:
                return bytes(candidate)
        raise CryptoError("DeriveKeyPairError")  # pragma: no cover - probability ~2^-256


_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "secp521r1": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}

DHKEM_P256 = _ECDHKEM(0x0010, 32, 32, KDF_HKDF_SHA256, "DHKEM(P-256)", ec.SECP256R1(), 0xFF)
DHKEM_P384 = _ECDHKEM(0x0011, 48, 48, KDF_HKDF_SHA384, "DHKEM(P-384)", ec.SECP384R1(), 0xFF)
DHKEM_P521 = _ECDHKEM(0x0012, 64, 66, KDF_HKDF_SHA512, "DHKEM(P-521)", ec.SECP521R1(), 0x01)
DHKEM_X25519 = _XDHKEM(
    0x0020,
    32,
    32,
    KDF_HKDF_SHA256,
    "DHKEM(X25519)",
    x25519.X25519PrivateKey.from_private_bytes,
    x25519.X25519PublicKey.from_public_bytes,
    x25519.X25519PrivateKey.generate,
)
DHKEM_X448 = _XDHKEM(
    0x0021,
    64,
    56,
    KDF_HKDF_SHA512,
    "DHKEM(X448)",
    x448.X448PrivateKey.from_private_bytes,
    x448.X448PublicKey.from_public_bytes,
    x448.X448PrivateKey.generate,
)


class Hpke:
    """One HPKE suite (KEM, KDF, AEAD) in base mode."""

    def __init__(self, kem: AnyDHKEM, kdf_id: int, aead_id: int) -> None:
        self.kem = kem
        self.aead = Aead(aead_id)
        hash_name, hash_len = _KDF_HASH[kdf_id]
        suite_id = (
            b"HPKE"
            + kem.kem_id.to_bytes(2, "big")
            + kdf_id.to_bytes(2, "big")
            + aead_id.to_bytes(2, "big")
        )
        self._labeled = _Labeled(suite_id, hash_name, hash_len)
        # psk_id is always empty in base mode, so its hash is a constant.
        self._psk_id_hash = self._labeled.extract(b"", b"psk_id_hash", b"")

    def _key_schedule(self, shared_secret: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
        lab = self._labeled
        info_hash = lab.extract(b"", b"info_hash", info)
        context = MODE_BASE + self._psk_id_hash + info_hash
        secret = lab.extract(shared_secret, b"secret", b"")
        key = lab.expand(secret, b"key", context, self.aead.key_len)
        base_nonce = lab.expand(secret, b"base_nonce", context, self.aead.nonce_len)
        exporter_secret = lab.expand(secret, b"exp", context, lab.hash_len)
        return key, base_nonce, exporter_secret

    def seal(self, pk_r: bytes, info: bytes, aad: bytes, pt: bytes) -> tuple[bytes, bytes]:
        shared_secret, enc = self.kem.encap(pk_r)
        key, nonce, _ = self._key_schedule(shared_secret, info)
        return enc, self.aead.seal(key, nonce, aad, pt)

    def open(self, sk_r: bytes, enc: bytes, info: bytes, aad: bytes, ct: bytes) -> bytes:
        shared_secret = self.kem.decap(enc, sk_r)
        key, nonce, _ = self._key_schedule(shared_secret, info)
        return self.aead.open(key, nonce, aad, ct)

    def export_sender(
        self, pk_r: bytes, info: bytes, exporter_context: bytes, n: int
    ) -> tuple[bytes, bytes]:
        shared_secret, enc = self.kem.encap(pk_r)
        _, _, exporter_secret = self._key_schedule(shared_secret, info)
        return enc, self._labeled.expand(exporter_secret, b"sec", exporter_context, n)

    def export_receiver(
        self, sk_r: bytes, enc: bytes, info: bytes, exporter_context: bytes, n: int
    ) -> bytes:
        shared_secret = self.kem.decap(enc, sk_r)
        _, _, exporter_secret = self._key_schedule(shared_secret, info)
        return self._labeled.expand(exporter_secret, b"sec", exporter_context, n)
