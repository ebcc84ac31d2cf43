"""The trust boundary of the KeyPackage directory (docs/api.md "KeyPackages"; RFC 9420
sections 10 and 10.1): a published batch is decoded into ``KeyPackageIn`` values, which are
unverified, and ``KeyPackageIn.validate`` turns each into a ``VerifiedKeyPackage``, the only
kind the directory stores. Nothing else makes a ``VerifiedKeyPackage``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

from roost.mls.codec import Reader
from roost.mls.constants import CredentialType, ExtensionType, LeafNodeSource, ProtocolVersion
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import DecodeError, UnsupportedError
from roost.mls.key_package import KeyPackage
from roost.protocol.key_package_batch import mls_vector_reader

from ..errors import Problem

WIRE_FORMAT_KEY_PACKAGE = 5
CLOCK_SKEW_SECONDS = 300

# Held only by ``KeyPackageIn.validate``: a ``VerifiedKeyPackage`` built without it is refused.
_VALIDATED = object()


@dataclass(frozen=True, slots=True)
class VerifiedKeyPackage:
    """A published KeyPackage that passed every check of ``KeyPackageIn.validate``."""

    data: bytes  # the MLSMessage encoding, served back verbatim on claim
    cipher_suite: int
    last_resort: bool
    init_key_hash: bytes
    not_after: int
    _made_by: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._made_by is not _VALIDATED:
            raise TypeError("a VerifiedKeyPackage is made only by KeyPackageIn.validate")


@dataclass(frozen=True, slots=True)
class Publisher:
    """What the publishing client's packages must match."""

    signature_key: bytes
    certificate: bytes


class KeyPackageIn(NamedTuple):
    """A KeyPackage as decoded from a published batch: well formed, nothing else checked."""

    data: bytes  # its MLSMessage encoding
    key_package: KeyPackage

    def validate(self, publisher: Publisher, now: int, max_lifetime: int) -> VerifiedKeyPackage:
        """Section 10.1 and the directory's rules: version, suite, leaf source, distinct init
        key, capabilities, the publisher's credential and key, lifetime, both signatures."""
        return _validate(self.data, self.key_package, publisher, now, max_lifetime)


def split_batch(body: bytes, max_items: int) -> list[KeyPackageIn]:
    """Decode ``MLSMessage key_packages<V>``; raises DecodeError or a Problem."""
    r = mls_vector_reader(body)
    out: list[KeyPackageIn] = []
    while r.remaining():
        if len(out) >= max_items:
            raise Problem(
                422, "too_many_keypackages", f"a batch holds at most {max_items} KeyPackages"
            )
        start = r.pos
        version = r.u16()
        wire_format = r.u16()
        if version != ProtocolVersion.MLS10:
            raise Problem(422, "unsupported_version", f"MLS version {version} is not supported")
        if wire_format != WIRE_FORMAT_KEY_PACKAGE:
            raise Problem(
                422,
                "wrong_wire_format",
                f"expected mls_key_package messages, got wire format {wire_format}",
            )
        kp = _decode_key_package(r)
        out.append(KeyPackageIn(body[start : r.pos], kp))
    if not out:
        raise Problem(422, "empty_batch", "the batch holds no KeyPackages")
    return out


def _decode_key_package(r: Reader) -> KeyPackage:
    try:
        return KeyPackage.decode_from(r)
    except DecodeError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:
        raise DecodeError(f"invalid KeyPackage: {e}") from None


def _validate(
    data: bytes, kp: KeyPackage, publisher: Publisher, now: int, max_lifetime: int
) -> VerifiedKeyPackage:
    if kp.version != ProtocolVersion.MLS10:
        raise Problem(
            422, "unsupported_version", f"KeyPackage version {kp.version} is not supported"
        )
    try:
        cs = get_cipher_suite(kp.cipher_suite)
    except UnsupportedError:
        raise Problem(
            422, "unsupported_cipher_suite", f"cipher suite {kp.cipher_suite} is not supported"
        ) from None
    leaf = kp.leaf_node
    if leaf.leaf_node_source != LeafNodeSource.KEY_PACKAGE or leaf.lifetime is None:
        raise Problem(422, "invalid_keypackage", "the leaf node source must be key_package")
    if kp.init_key == leaf.encryption_key:
        raise Problem(
            422, "duplicate_init_key", "init_key must differ from the leaf's encryption key"
        )
    caps = leaf.capabilities
    if (
        kp.cipher_suite not in caps.cipher_suites
        or ProtocolVersion.MLS10 not in caps.versions
        or CredentialType.X509 not in caps.credentials
    ):
        raise Problem(
            422,
            "invalid_keypackage",
            "the leaf's capabilities must list mls10, the package's suite and x509 credentials",
        )
    cred = leaf.credential
    if (
        leaf.signature_key != publisher.signature_key
        or cred.credential_type != CredentialType.X509
        or not cred.certificates
        or cred.certificates[0] != publisher.certificate
    ):
        raise Problem(
            422,
            "credential_mismatch",
            "the KeyPackage must carry the publishing client's signature key and issued credential",
        )
    lifetime = leaf.lifetime
    if (
        lifetime.not_before > now + CLOCK_SKEW_SECONDS
        or lifetime.not_after <= now
        or lifetime.not_after > now + max_lifetime
        or lifetime.not_before > lifetime.not_after
    ):
        raise Problem(
            422,
            "invalid_lifetime",
            f"the lifetime must include now and end within {max_lifetime // 86400} days",
        )
    if not cs.verify_with_label(leaf.signature_key, b"LeafNodeTBS", leaf.tbs(), leaf.signature):
        raise Problem(422, "invalid_signature", "the leaf node signature does not verify")
    if not cs.verify_with_label(leaf.signature_key, b"KeyPackageTBS", kp.tbs(), kp.signature):
        raise Problem(422, "invalid_signature", "the KeyPackage signature does not verify")
    last_resort = any(e.extension_type == ExtensionType.LAST_RESORT for e in kp.extensions)
    return VerifiedKeyPackage(
        data=data,
        cipher_suite=kp.cipher_suite,
        last_resort=last_resort,
        init_key_hash=hashlib.sha256(kp.init_key).digest(),
        not_after=lifetime.not_after,
        _made_by=_VALIDATED,
    )


def validate_batch(
    body: bytes, publisher: Publisher, now: int, max_items: int, max_lifetime: int
) -> list[VerifiedKeyPackage]:
    """Decode and verify a whole batch, then the batch rules (unique init keys, a last-resort
    package); any failure refuses the batch."""
    packages = [
        package.validate(publisher, now, max_lifetime) for package in split_batch(body, max_items)
    ]
    if len({p.init_key_hash for p in packages}) != len(packages):
        raise Problem(422, "duplicate_init_key", "two KeyPackages in the batch share an init key")
    if not any(p.last_resort for p in packages):
        raise Problem(422, "no_last_resort", "a batch needs at least one last-resort KeyPackage")
    return packages
