"""Generate KeyPackages (RFC 9420 section 10) together with their private keys."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from .constants import DEFAULT_CREDENTIAL_TYPES, ExtensionType, LeafNodeSource, ProtocolVersion
from .credential import Credential
from .crypto.ciphersuite import CipherSuite, get_cipher_suite
from .extensions import Extension
from .key_package import KeyPackage
from .leaf_node import Capabilities, LeafNode, Lifetime

# A KeyPackage lives 90 days by default; "not_before" is back-dated to tolerate clock skew.
DEFAULT_LIFETIME_SECONDS = 90 * 24 * 3600
CLOCK_SKEW_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class KeyPackageBundle:
    """A KeyPackage and the private keys its owner must keep to join a group with it."""

    key_package: KeyPackage
    init_private_key: bytes
    encryption_private_key: bytes
    signature_private_key: bytes


def default_capabilities(cipher_suite: int, extensions: tuple[int, ...] = ()) -> Capabilities:
    return Capabilities(
        versions=(ProtocolVersion.MLS10,),
        cipher_suites=(cipher_suite,),
        extensions=tuple(extensions),
        proposals=(),
        credentials=tuple(sorted(DEFAULT_CREDENTIAL_TYPES)),
    )


def generate_key_package(
    cipher_suite: int,
    credential: Credential,
    signature_private_key: bytes,
    *,
    lifetime: Lifetime | None = None,
    capabilities: Capabilities | None = None,
    last_resort: bool = False,
    leaf_extensions: tuple[Extension, ...] = (),
    now: int | None = None,
) -> KeyPackageBundle:
    """Build and sign a KeyPackage; fresh HPKE keys are drawn for init and leaf encryption.

    ``last_resort`` adds the (empty) last_resort KeyPackage extension so the directory keeps
    handing this package out once all others are used.
    """
    cs = get_cipher_suite(cipher_suite)
    signature_key = cs.signature_public_key(signature_private_key)
    if lifetime is None:
        t = int(time.time()) if now is None else now
        lifetime = Lifetime(max(0, t - CLOCK_SKEW_SECONDS), t + DEFAULT_LIFETIME_SECONDS)
    if capabilities is None:
        capabilities = default_capabilities(cipher_suite)
    kp_extensions: tuple[Extension, ...] = ()
    if last_resort:
        kp_extensions = (Extension(ExtensionType.LAST_RESORT, b""),)
        if ExtensionType.LAST_RESORT not in capabilities.extensions:
            # A member must list every non-default extension it uses (section 7.2).
            capabilities = Capabilities(
                capabilities.versions,
                capabilities.cipher_suites,
                (*capabilities.extensions, ExtensionType.LAST_RESORT),
                capabilities.proposals,
                capabilities.credentials,
            )
    enc_priv, enc_pub = cs.generate_hpke_key_pair()
    init_priv, init_pub = cs.generate_hpke_key_pair()
    unsigned_leaf = LeafNode(
        encryption_key=enc_pub,
        signature_key=signature_key,
        credential=credential,
        capabilities=capabilities,
        leaf_node_source=LeafNodeSource.KEY_PACKAGE,
        lifetime=lifetime,
        extensions=tuple(leaf_extensions),
    )
    leaf = sign_leaf_node(cs, unsigned_leaf, signature_private_key)
    unsigned_kp = KeyPackage(
        version=ProtocolVersion.MLS10,
        cipher_suite=cipher_suite,
        init_key=init_pub,
        leaf_node=leaf,
        extensions=kp_extensions,
        signature=b"",
    )
    signature = cs.sign_with_label(signature_private_key, b"KeyPackageTBS", unsigned_kp.tbs())
    kp = replace(unsigned_kp, signature=signature)
    return KeyPackageBundle(kp, init_priv, enc_priv, signature_private_key)


def sign_leaf_node(
    cs: CipherSuite,
    leaf: LeafNode,
    signature_private_key: bytes,
    group_id: bytes | None = None,
    leaf_index: int | None = None,
) -> LeafNode:
    """Return ``leaf`` with its signature over LeafNodeTBS (section 7.2)."""
    sig = cs.sign_with_label(signature_private_key, b"LeafNodeTBS", leaf.tbs(group_id, leaf_index))
    return replace(leaf, signature=sig)
