"""MLS ciphersuites (RFC 9420 sections 5 and 17.1).

``get_cipher_suite(suite_id)`` returns a shared, immutable ``CipherSuite`` (raises
``UnsupportedError`` for unknown ids). Labels passed to the ``*_with_label`` helpers,
``derive_secret`` and ``derive_tree_secret`` are given WITHOUT the ``"MLS 1.0 "`` prefix;
the suite adds it. ``ref_hash`` takes its label verbatim, as RFC 9420 section 5.2 defines
(``key_package_ref`` / ``proposal_ref`` supply the full ``"MLS 1.0 ..."`` labels).
Keys are raw bytes in the RFC 9420 / test-vector encodings.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
from collections.abc import Callable
from typing import Protocol

from ..codec import encode_varint
from ..errors import CryptoError, UnsupportedError
from . import hpke, kdf, signature
from .aead import AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305

_hmac_digest: Callable[[bytes, bytes, str], bytes]
try:  # the C function behind hmac.digest, without its Python wrapper (hot path)
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # pragma: no cover - non-CPython / no OpenSSL
    _hmac_digest = hmac.digest


class HashState(Protocol):
    """An incremental hash (``hashlib`` object or CPython's own SHA-2 state)."""

    def update(self, data: bytes, /) -> None: ...
    def copy(self) -> HashState: ...
    def digest(self) -> bytes: ...


HashConstructor = Callable[[bytes], HashState]
# ``hmac_key``'s result: the inner and outer hash states with the padded key absorbed.
HmacKey = tuple[HashState, HashState]


def _builtin_sha2() -> tuple[HashConstructor, HashConstructor, HashConstructor]:
    """CPython's own SHA-2 for HMACs under a precomputed key (``hmac_key``): copying its state
    is a memcpy, where an OpenSSL digest context costs a provider round trip per call. Its
    private modules (``_sha2`` from 3.12, ``_sha256`` / ``_sha512`` before) have no type stubs,
    hence the import by name."""
    for sha256_module, sha512_module in (("_sha2", "_sha2"), ("_sha256", "_sha512")):
        try:
            small = importlib.import_module(sha256_module)
            big = importlib.import_module(sha512_module)
        except ImportError:  # pragma: no cover - depends on the Python version
            continue
        return small.sha256, big.sha384, big.sha512
    return hashlib.sha256, hashlib.sha384, hashlib.sha512  # pragma: no cover


_sha256, _sha384, _sha512 = _builtin_sha2()
_HMAC_HASH = {"sha256": (_sha256, 64), "sha384": (_sha384, 128), "sha512": (_sha512, 128)}
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))

_PREFIX = b"MLS 1.0 "
_LABEL_HEADS: dict[tuple[bytes, int], bytes] = {}


def _label_head(label: bytes, n: int) -> bytes:
    """``uint16 length || opaque label<V>`` of KDFLabel, memoised for the few fixed labels."""
    head = n.to_bytes(2, "big") + encode_varint(len(label) + 8) + _PREFIX + label
    if len(_LABEL_HEADS) < 1024:  # labels are protocol constants; bound it anyway
        _LABEL_HEADS[(label, n)] = head
    return head


def _opaque(b: bytes) -> bytes:
    return encode_varint(len(b)) + b


_SIGN_LABELS: dict[bytes, bytes] = {}


def _sign_content(label: bytes, content: bytes) -> bytes:
    """SignWithLabel's SignContent: ``opaque label<V>`` (memoised, labels are protocol
    constants) then ``opaque content<V>``, joined once."""
    head = _SIGN_LABELS.get(label)
    if head is None:
        head = _opaque(_PREFIX + label)
        if len(_SIGN_LABELS) < 64:
            _SIGN_LABELS[label] = head
    return b"".join((head, encode_varint(len(content)), content))


class CipherSuite:
    """All cryptographic operations MLS needs, bound to one ciphersuite."""

    __slots__ = (
        "suite_id",
        "name",
        "hash_name",
        "hash_len",
        "aead_key_len",
        "aead_nonce_len",
        "hpke",
        "kem",
        "aead",
        "signature",
        "_hash_ctor",
        "_zero",
        "_hmac_hash",
        "_hmac_block",
        "_ratchet_heads",
        "_sd_heads",
    )

    def __init__(
        self,
        suite_id: int,
        name: str,
        kem: hpke.AnyDHKEM,
        kdf_id: int,
        aead_id: int,
        hash_name: str,
        sig: signature.SignatureScheme,
    ) -> None:
        self.suite_id = suite_id
        self.name = name
        self.hash_name = hash_name
        self._hash_ctor: HashConstructor = getattr(hashlib, hash_name)
        self.hash_len = self._hash_ctor().digest_size
        self.kem = kem
        self.hpke = hpke.Hpke(kem, kdf_id, aead_id)
        self.aead = self.hpke.aead
        self.aead_key_len = self.aead.key_len
        self.aead_nonce_len = self.aead.nonce_len
        self.signature = sig
        self._zero = bytes(self.hash_len)
        self._hmac_hash, self._hmac_block = _HMAC_HASH[hash_name]
        # The one-block HKDF-Expand shortcut below needs every derived key to fit a block.
        assert max(self.aead_key_len, self.aead_nonce_len) <= self.hash_len
        # KDFLabel prefixes of the secret-tree ratchet (context: a 4-byte generation) and of
        # the sender-data key and nonce (context: the ciphertext sample, its length added).
        self._ratchet_heads = (
            _label_head(b"key", self.aead_key_len) + b"\x04",
            _label_head(b"nonce", self.aead_nonce_len) + b"\x04",
            _label_head(b"secret", self.hash_len) + b"\x04",
        )
        self._sd_heads = (
            _label_head(b"key", self.aead_key_len),
            _label_head(b"nonce", self.aead_nonce_len),
        )

    def __repr__(self) -> str:
        return f"CipherSuite({self.suite_id}, {self.name})"

    @property
    def zero(self) -> bytes:
        """``Nh`` zero bytes (the default commit/PSK secret)."""
        return self._zero

    # Hash, MAC, KDF -------------------------------------------------------------------
    def hash(self, b: bytes) -> bytes:
        return self._hash_ctor(b).digest()

    def hasher(self, b: bytes = b"") -> HashState:
        """An incremental hash object of the suite's hash (``update`` / ``digest``)."""
        return self._hash_ctor(b)

    def mac(self, key: bytes, b: bytes) -> bytes:
        return _hmac_digest(key, b, self.hash_name)

    def verify_mac(self, key: bytes, b: bytes, tag: bytes) -> bool:
        return hmac.compare_digest(_hmac_digest(key, b, self.hash_name), tag)

    def hmac_key(self, key: bytes) -> HmacKey:
        """``key`` prepared for several MACs (RFC 2104): the inner and outer hash states with
        the padded key already absorbed. ``mac_with`` then skips two of the four compression
        calls and the per-call OpenSSL set-up of ``mac``."""
        h, block = self._hmac_hash, self._hmac_block
        if len(key) > block:
            key = h(key).digest()
        key = key.ljust(block, b"\0")
        return h(key.translate(_IPAD)), h(key.translate(_OPAD))

    @staticmethod
    def mac_with(hmac_key: HmacKey, b: bytes) -> bytes:
        """HMAC of ``b`` under a key from ``hmac_key`` (equal to ``mac(key, b)``)."""
        inner = hmac_key[0].copy()
        inner.update(b)
        outer = hmac_key[1].copy()
        outer.update(inner.digest())
        return outer.digest()

    def ratchet_step(self, secret: bytes, generation: int) -> tuple[bytes, bytes, bytes]:
        """One generation of a secret-tree hash ratchet (RFC 9420 section 9.1): the
        ``(key, nonce, next secret)`` of DeriveTreeSecret with labels "key", "nonce" and
        "secret", from one HMAC key set-up instead of three."""
        h, block = self._hmac_hash, self._hmac_block
        if len(secret) > block:  # pragma: no cover - tree secrets are Nh <= block bytes
            secret = h(secret).digest()
        k = secret.ljust(block, b"\0")
        ipad, opad = h(k.translate(_IPAD)), h(k.translate(_OPAD))
        tail = generation.to_bytes(4, "big") + b"\x01"
        key_head, nonce_head, secret_head = self._ratchet_heads
        inner = ipad.copy()  # unrolled: this runs for every message, sent and received
        inner.update(key_head + tail)
        outer = opad.copy()
        outer.update(inner.digest())
        key = outer.digest()[: self.aead_key_len]
        inner = ipad.copy()
        inner.update(nonce_head + tail)
        outer = opad.copy()
        outer.update(inner.digest())
        nonce = outer.digest()[: self.aead_nonce_len]
        ipad.update(secret_head + tail)  # last use: no copies needed
        opad.update(ipad.digest())
        return key, nonce, opad.digest()

    def expand_with_labels(self, secret: bytes, *requests: tuple[bytes, bytes, int]) -> list[bytes]:
        """``expand_with_label(secret, label, context, n)`` for each ``(label, context, n)``,
        with one HMAC key set-up for all (every ``n`` at most Nh)."""
        key = self.hmac_key(secret)
        out = []
        for label, context, n in requests:
            if n > self.hash_len:
                raise ValueError("expand_with_labels: output longer than one hash block")
            head = _LABEL_HEADS.get((label, n))
            if head is None:
                head = _label_head(label, n)
            lc = len(context)
            info = head + (bytes((lc,)) if lc < 0x40 else encode_varint(lc)) + context
            out.append(self.mac_with(key, info + b"\x01")[:n])
        return out

    def sender_data_key_nonce(self, hmac_key: HmacKey, ciphertext: bytes) -> tuple[bytes, bytes]:
        """Key and nonce protecting SenderData (section 6.3.2), under the sender-data
        secret prepared with ``hmac_key``, bound to a sample of the content ciphertext."""
        sample = ciphertext[: self.hash_len]
        n = len(sample)
        tail = (bytes((n,)) if n < 0x40 else encode_varint(n)) + sample + b"\x01"
        ipad, opad = hmac_key
        kh, nh = self._sd_heads
        inner = ipad.copy()
        inner.update(kh + tail)
        outer = opad.copy()
        outer.update(inner.digest())
        key = outer.digest()[: self.aead_key_len]
        inner = ipad.copy()
        inner.update(nh + tail)
        outer = opad.copy()
        outer.update(inner.digest())
        return key, outer.digest()[: self.aead_nonce_len]

    def kdf_extract(self, salt: bytes, ikm: bytes) -> bytes:
        return kdf.extract(self.hash_name, self.hash_len, salt, ikm)

    def kdf_expand(self, prk: bytes, info: bytes, n: int) -> bytes:
        return kdf.expand(self.hash_name, self.hash_len, prk, info, n)

    def expand_with_label(self, secret: bytes, label: bytes, context: bytes, n: int) -> bytes:
        # Hot path (several calls per message): the KDFLabel head depends only on
        # (label, n), so it is cached; single-block outputs call HMAC directly.
        head = _LABEL_HEADS.get((label, n))
        if head is None:
            head = _label_head(label, n)
        lc = len(context)
        info = head + (bytes((lc,)) if lc < 0x40 else encode_varint(lc)) + context
        if n <= self.hash_len:
            return _hmac_digest(secret, info + b"\x01", self.hash_name)[:n]
        return kdf.expand(self.hash_name, self.hash_len, secret, info, n)

    def derive_secret(self, secret: bytes, label: bytes) -> bytes:
        return self.expand_with_label(secret, label, b"", self.hash_len)

    def derive_tree_secret(self, secret: bytes, label: bytes, generation: int, n: int) -> bytes:
        return self.expand_with_label(secret, label, generation.to_bytes(4, "big"), n)

    # References -----------------------------------------------------------------------
    def ref_hash(self, label: bytes, value: bytes) -> bytes:
        return self._hash_ctor(_opaque(label) + _opaque(value)).digest()

    def key_package_ref(self, kp_bytes: bytes) -> bytes:
        return self.ref_hash(b"MLS 1.0 KeyPackage Reference", kp_bytes)

    def proposal_ref(self, authenticated_content_bytes: bytes) -> bytes:
        return self.ref_hash(b"MLS 1.0 Proposal Reference", authenticated_content_bytes)

    # Signatures -----------------------------------------------------------------------
    def sign_with_label(self, sig_priv: bytes, label: bytes, content: bytes) -> bytes:
        return self.signature.sign(sig_priv, _sign_content(label, content))

    def verify_with_label(
        self, sig_pub: bytes, label: bytes, content: bytes, signature: bytes
    ) -> bool:
        return self.signature.verify(sig_pub, _sign_content(label, content), signature)

    def generate_signature_key_pair(self) -> tuple[bytes, bytes]:
        return self.signature.generate()

    def signature_public_key(self, priv: bytes) -> bytes:
        return self.signature.public_key(priv)

    # Public-key encryption ------------------------------------------------------------
    def encrypt_with_label(
        self, hpke_pub: bytes, label: bytes, context: bytes, plaintext: bytes
    ) -> tuple[bytes, bytes]:
        info = _opaque(_PREFIX + label) + _opaque(context)
        return self.hpke.seal(hpke_pub, info, b"", plaintext)

    def decrypt_with_label(
        self, hpke_priv: bytes, label: bytes, context: bytes, kem_output: bytes, ciphertext: bytes
    ) -> bytes:
        info = _opaque(_PREFIX + label) + _opaque(context)
        return self.hpke.open(hpke_priv, kem_output, info, b"", ciphertext)

    def hpke_seal(self, pub: bytes, info: bytes, aad: bytes, pt: bytes) -> tuple[bytes, bytes]:
        return self.hpke.seal(pub, info, aad, pt)

    def hpke_open(self, priv: bytes, enc: bytes, info: bytes, aad: bytes, ct: bytes) -> bytes:
        return self.hpke.open(priv, enc, info, aad, ct)

    def hpke_export_sender(
        self, pub: bytes, info: bytes, exporter_context: bytes, n: int
    ) -> tuple[bytes, bytes]:
        return self.hpke.export_sender(pub, info, exporter_context, n)

    def hpke_export_receiver(
        self, priv: bytes, enc: bytes, info: bytes, exporter_context: bytes, n: int
    ) -> bytes:
        return self.hpke.export_receiver(priv, enc, info, exporter_context, n)

    def derive_hpke_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        return self.kem.derive_key_pair(ikm)

    def generate_hpke_key_pair(self) -> tuple[bytes, bytes]:
        return self.kem.generate_key_pair()

    def hpke_public_key(self, priv: bytes) -> bytes:
        return self.kem.public_key(priv)

    # Symmetric encryption ----------------------------------------------------------------
    def aead_seal(
        self, key: bytes, nonce: bytes, aad: bytes, pt: bytes, *, cache: bool = False
    ) -> bytes:
        return self.aead.seal(key, nonce, aad, pt, cache=cache)

    def aead_open(
        self, key: bytes, nonce: bytes, aad: bytes, ct: bytes, *, cache: bool = False
    ) -> bytes:
        """Raises ``CryptoError`` if authentication fails."""
        return self.aead.open(key, nonce, aad, ct, cache=cache)


_SUITES: dict[int, CipherSuite] = {
    s.suite_id: s
    for s in (
        CipherSuite(
            1,
            "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
            hpke.DHKEM_X25519,
            hpke.KDF_HKDF_SHA256,
            AES_128_GCM,
            "sha256",
            signature.ED25519,
        ),
        CipherSuite(
            2,
            "MLS_128_DHKEMP256_AES128GCM_SHA256_P256",
            hpke.DHKEM_P256,
            hpke.KDF_HKDF_SHA256,
            AES_128_GCM,
            "sha256",
            signature.ECDSA_P256_SHA256,
        ),
        CipherSuite(
            3,
            "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
            hpke.DHKEM_X25519,
            hpke.KDF_HKDF_SHA256,
            CHACHA20_POLY1305,
            "sha256",
            signature.ED25519,
        ),
        CipherSuite(
            4,
            "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448",
            hpke.DHKEM_X448,
            hpke.KDF_HKDF_SHA512,
            AES_256_GCM,
            "sha512",
            signature.ED448,
        ),
        CipherSuite(
            5,
            "MLS_256_DHKEMP521_AES256GCM_SHA512_P521",
            hpke.DHKEM_P521,
            hpke.KDF_HKDF_SHA512,
            AES_256_GCM,
            "sha512",
            signature.ECDSA_P521_SHA512,
        ),
        CipherSuite(
            6,
            "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448",
            hpke.DHKEM_X448,
            hpke.KDF_HKDF_SHA512,
            CHACHA20_POLY1305,
            "sha512",
            signature.ED448,
        ),
        CipherSuite(
            7,
            "MLS_256_DHKEMP384_AES256GCM_SHA384_P384",
            hpke.DHKEM_P384,
            hpke.KDF_HKDF_SHA384,
            AES_256_GCM,
            "sha384",
            signature.ECDSA_P384_SHA384,
        ),
    )
}

SUPPORTED_SUITES: tuple[int, ...] = tuple(sorted(_SUITES))


def get_cipher_suite(suite_id: int) -> CipherSuite:
    try:
        return _SUITES[suite_id]
    except (KeyError, TypeError):
        raise UnsupportedError(f"unsupported ciphersuite {suite_id!r}") from None


__all__ = ["CipherSuite", "SUPPORTED_SUITES", "get_cipher_suite", "CryptoError"]
