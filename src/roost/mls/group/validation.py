"""Validation of leaf nodes (RFC 9420 section 7.3) and KeyPackages (section 10.1).

Pure functions over the public group state: they never mutate anything and raise
``ValidationError`` (or ``CryptoError`` for bad signatures) with a precise message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..constants import (
    DEFAULT_EXTENSION_TYPES,
    DEFAULT_PROPOSAL_TYPES,
    ExtensionType,
    LeafNodeSource,
    ProtocolVersion,
)
from ..credential import Credential
from ..errors import CryptoError, DecodeError, ValidationError
from ..extension_types import RequiredCapabilities
from ..extensions import Extension, find_extension
from ..key_package import KeyPackage
from ..leaf_node import LeafNode

# The application's credential policy: receives (credential, signature_key) and returns False
# (or raises ValidationError) to reject a leaf.
CredentialPolicy = Callable[[Credential, bytes], bool | None]


def required_capabilities(extensions: Iterable[Extension]) -> RequiredCapabilities | None:
    ext = find_extension(tuple(extensions), ExtensionType.REQUIRED_CAPABILITIES)
    if ext is None:
        return None
    try:
        return RequiredCapabilities.decode(ext.extension_data)
    except DecodeError as e:
        raise ValidationError(f"invalid required_capabilities extension: {e}") from None


def check_supports_extensions(leaf: LeafNode, extensions: Iterable[Extension], who: str) -> None:
    """The leaf supports every non-default extension type in ``extensions`` and the group's
    required capabilities (sections 7.2, 11.1, 12.1.7)."""
    caps = leaf.capabilities
    exts = tuple(extensions)
    for e in exts:
        t = e.extension_type
        if t not in DEFAULT_EXTENSION_TYPES and t not in caps.extensions:
            raise ValidationError(f"{who} does not support group context extension type {t}")
    req = required_capabilities(exts)
    if req is None:
        return
    for t in req.extension_types:
        if t not in DEFAULT_EXTENSION_TYPES and t not in caps.extensions:
            raise ValidationError(f"{who} lacks required extension type {t}")
    for t in req.proposal_types:
        if t not in DEFAULT_PROPOSAL_TYPES and t not in caps.proposals:
            raise ValidationError(f"{who} lacks required proposal type {t}")
    for t in req.credential_types:
        if t not in caps.credentials:
            raise ValidationError(f"{who} lacks required credential type {t}")


class MemberIndex:
    """What section 7.3 compares a new leaf with, kept incrementally so that validating n
    new leaves costs O(n), not O(n * members): key owners, credential types in use, and how
    many members support each credential type."""

    __slots__ = ("enc", "sig", "used", "supported", "count")

    def __init__(self, leaves: Iterable[tuple[int, LeafNode]] = ()) -> None:
        self.enc: dict[bytes, int] = {}
        self.sig: dict[bytes, int] = {}
        self.used: dict[int, int] = {}  # credential type -> members using it
        self.supported: dict[int, int] = {}  # credential type -> members supporting it
        self.count = 0
        for i, leaf in leaves:
            self.add(i, leaf)

    def add(self, index: int, leaf: LeafNode) -> None:
        self.enc[leaf.encryption_key] = index
        self.sig[leaf.signature_key] = index
        t = leaf.credential.credential_type
        self.used[t] = self.used.get(t, 0) + 1
        for c in set(leaf.capabilities.credentials):
            self.supported[c] = self.supported.get(c, 0) + 1
        self.count += 1

    def remove(self, index: int, leaf: LeafNode) -> None:
        if self.enc.get(leaf.encryption_key) == index:
            del self.enc[leaf.encryption_key]
        if self.sig.get(leaf.signature_key) == index:
            del self.sig[leaf.signature_key]
        t = leaf.credential.credential_type
        self.used[t] -= 1
        if not self.used[t]:
            del self.used[t]
        for c in set(leaf.capabilities.credentials):
            self.supported[c] -= 1
        self.count -= 1

    def check(self, leaf: LeafNode, who: str) -> None:
        """Compare ``leaf`` with the members (a replaced leaf must be removed first)."""
        ctype = leaf.credential.credential_type
        if self.supported.get(ctype, 0) < self.count:
            raise ValidationError(f"{who}: credential type {ctype} is not supported by all members")
        caps = leaf.capabilities.credentials
        for t in self.used:
            if t not in caps:
                raise ValidationError(
                    f"{who} does not support credential type {t} used in the group"
                )
        owner = self.enc.get(leaf.encryption_key)
        if owner is not None:
            raise ValidationError(f"{who}: encryption key already used by leaf {owner}")
        owner = self.sig.get(leaf.signature_key)
        if owner is not None:
            raise ValidationError(f"{who}: signature key already used by leaf {owner}")


def validate_leaf_node(
    cs,
    leaf: LeafNode,
    *,
    source: LeafNodeSource,
    group_id: bytes,
    leaf_index: int | None,
    group_extensions: tuple[Extension, ...],
    members: MemberIndex | Iterable[tuple[int, LeafNode]],
    replaces: int | None = None,
    check_lifetime: bool = False,
    now: int | None = None,
    credential_policy: CredentialPolicy | None = None,
    check_signature: bool = True,
) -> None:
    """Section 7.3: every rule a new or changed leaf must satisfy.

    ``members`` are the current leaves the leaf must be consistent with: a ``MemberIndex``
    (the leaf being replaced already removed from it) or (index, leaf) pairs, in which case
    the pair at index ``replaces`` is left out.
    """
    who = f"leaf {leaf_index}" if leaf_index is not None else "new leaf"
    if leaf.leaf_node_source != source:
        raise ValidationError(
            f"{who}: leaf_node_source is {LeafNodeSource(leaf.leaf_node_source).name.lower()}, "
            f"expected {source.name.lower()}"
        )
    if check_signature:
        tbs = leaf.tbs(group_id, leaf_index) if source != LeafNodeSource.KEY_PACKAGE else leaf.tbs()
        if not cs.verify_with_label(leaf.signature_key, b"LeafNodeTBS", tbs, leaf.signature):
            raise CryptoError(f"{who}: invalid LeafNode signature")
    caps = leaf.capabilities
    if ProtocolVersion.MLS10 not in caps.versions:
        raise ValidationError(f"{who} does not support protocol version mls10")
    check_supports_extensions(leaf, group_extensions, who)
    for e in leaf.extensions:
        t = e.extension_type
        if t not in DEFAULT_EXTENSION_TYPES and t not in caps.extensions:
            raise ValidationError(f"{who} uses extension type {t} missing from its capabilities")
    if check_lifetime and source == LeafNodeSource.KEY_PACKAGE:
        lt = leaf.lifetime
        t = int(time.time()) if now is None else now
        if lt is None or not (lt.not_before <= t <= lt.not_after):
            raise ValidationError(f"{who}: lifetime does not cover the current time")
    ctype = leaf.credential.credential_type
    if ctype not in caps.credentials:
        raise ValidationError(f"{who}: own credential type {ctype} missing from its capabilities")
    if not isinstance(members, MemberIndex):
        members = MemberIndex((i, m) for i, m in members if i != replaces)
    members.check(leaf, who)
    if credential_policy is not None:
        # Application code: its own failures (a database down, a bug) are not the peer's
        # fault, so whatever it raises propagates unchanged rather than as a ValidationError.
        ok = credential_policy(leaf.credential, leaf.signature_key)
        if ok is False:
            raise ValidationError(f"{who}: credential rejected by policy")


# KeyPackages whose two signatures were already verified, by (suite, KeyPackageRef): the
# verdict is a pure function of the bytes, and the server verifies each KeyPackage at upload,
# so a commit adding many members need not verify them again. Bounded.
_VERIFIED_KEY_PACKAGES: dict[tuple[int, bytes], None] = {}
_VERIFIED_MAX = 8192


def verify_key_package_signatures(cs, kp: KeyPackage) -> None:
    """Check the KeyPackage and LeafNode signatures (sections 10.1, 7.3), with a cache."""
    key = (cs.suite_id, cs.key_package_ref(kp.encode()))
    if key in _VERIFIED_KEY_PACKAGES:
        return
    leaf = kp.leaf_node
    if not cs.verify_with_label(leaf.signature_key, b"KeyPackageTBS", kp.tbs(), kp.signature):
        raise CryptoError("invalid KeyPackage signature")
    if not cs.verify_with_label(leaf.signature_key, b"LeafNodeTBS", leaf.tbs(), leaf.signature):
        raise CryptoError("invalid LeafNode signature in KeyPackage")
    if len(_VERIFIED_KEY_PACKAGES) >= _VERIFIED_MAX:
        _VERIFIED_KEY_PACKAGES.clear()
    _VERIFIED_KEY_PACKAGES[key] = None


def validate_key_package(
    cs,
    kp: KeyPackage,
    *,
    cipher_suite: int,
    group_id: bytes,
    group_extensions: tuple[Extension, ...],
    members: MemberIndex | Iterable[tuple[int, LeafNode]],
    check_lifetime: bool = True,
    now: int | None = None,
    credential_policy: CredentialPolicy | None = None,
) -> None:
    """Section 10.1: version, suite, signature, init_key != encryption_key, valid leaf."""
    if kp.version != ProtocolVersion.MLS10:
        raise ValidationError(f"KeyPackage version {kp.version} is not mls10")
    if kp.cipher_suite != cipher_suite:
        raise ValidationError(
            f"KeyPackage cipher suite {kp.cipher_suite} differs from the group's {cipher_suite}"
        )
    if kp.init_key == kp.leaf_node.encryption_key:
        raise ValidationError("KeyPackage init_key equals its leaf encryption_key")
    verify_key_package_signatures(cs, kp)
    validate_leaf_node(
        cs,
        kp.leaf_node,
        source=LeafNodeSource.KEY_PACKAGE,
        group_id=group_id,
        leaf_index=None,
        group_extensions=group_extensions,
        members=members,
        check_lifetime=check_lifetime,
        now=now,
        credential_policy=credential_policy,
        check_signature=False,  # verified with the KeyPackage signature above
    )


def validate_tree_leaves(tree, extensions: tuple[Extension, ...]) -> None:
    """Section 7.3 checks a joiner or observer runs on every leaf of a received tree, beyond
    the tree's own structural checks (signatures, keys, parent hashes): capabilities cover
    the group's extensions and required capabilities, leaf extensions are listed in the
    leaf's capabilities, and every credential type in use is supported by every member."""
    leaves = list(tree.leaves())
    members = MemberIndex(leaves)
    for idx, leaf in leaves:
        who = f"leaf {idx}"
        caps = leaf.capabilities
        if ProtocolVersion.MLS10 not in caps.versions:
            raise ValidationError(f"{who} does not support protocol version mls10")
        check_supports_extensions(leaf, extensions, who)
        for e in leaf.extensions:
            t = e.extension_type
            if t not in DEFAULT_EXTENSION_TYPES and t not in caps.extensions:
                raise ValidationError(
                    f"{who} uses extension type {t} missing from its capabilities"
                )
        for t in members.used:
            if t not in caps.credentials:
                raise ValidationError(
                    f"{who} does not support credential type {t} used in the group"
                )
