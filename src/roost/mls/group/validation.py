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


def validate_leaf_node(
    cs,
    leaf: LeafNode,
    *,
    source: LeafNodeSource,
    group_id: bytes,
    leaf_index: int | None,
    group_extensions: tuple[Extension, ...],
    members: Iterable[tuple[int, LeafNode]],
    replaces: int | None = None,
    check_lifetime: bool = False,
    now: int | None = None,
    credential_policy: CredentialPolicy | None = None,
    check_signature: bool = True,
) -> None:
    """Section 7.3: every rule a new or changed leaf must satisfy.

    ``members`` are the current leaves (index, LeafNode) the leaf must be consistent with;
    ``replaces`` is the index of the leaf this one replaces (excluded from uniqueness checks).
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
    for idx, other in members:
        if idx == replaces:
            continue
        if ctype not in other.capabilities.credentials:
            raise ValidationError(f"{who}: credential type {ctype} not supported by leaf {idx}")
        if other.credential.credential_type not in caps.credentials:
            raise ValidationError(
                f"{who} does not support credential type "
                f"{other.credential.credential_type} used by leaf {idx}"
            )
        if other.encryption_key == leaf.encryption_key:
            raise ValidationError(f"{who}: encryption key already used by leaf {idx}")
        if other.signature_key == leaf.signature_key:
            raise ValidationError(f"{who}: signature key already used by leaf {idx}")
    if credential_policy is not None:
        try:
            ok = credential_policy(leaf.credential, leaf.signature_key)
        except ValidationError:
            raise
        except Exception as e:  # the policy is application code: report, never crash
            raise ValidationError(f"{who}: credential rejected by policy: {e}") from None
        if ok is False:
            raise ValidationError(f"{who}: credential rejected by policy")


def validate_key_package(
    cs,
    kp: KeyPackage,
    *,
    cipher_suite: int,
    group_id: bytes,
    group_extensions: tuple[Extension, ...],
    members: Iterable[tuple[int, LeafNode]],
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
    if not cs.verify_with_label(
        kp.leaf_node.signature_key, b"KeyPackageTBS", kp.tbs(), kp.signature
    ):
        raise CryptoError("invalid KeyPackage signature")
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
    )
