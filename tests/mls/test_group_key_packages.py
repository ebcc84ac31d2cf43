"""KeyPackage generation (key_package_gen): valid, self-consistent, with its private keys."""

from __future__ import annotations

import pytest

from roost.mls.constants import ExtensionType, LeafNodeSource
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES, get_cipher_suite
from roost.mls.errors import ValidationError
from roost.mls.extensions import find_extension
from roost.mls.framing import MLSMessage
from roost.mls.group.validation import validate_key_package
from roost.mls.key_package import KeyPackage
from roost.mls.key_package_gen import generate_key_package
from roost.mls.leaf_node import Lifetime


@pytest.mark.parametrize("suite", SUPPORTED_SUITES)
def test_generated_key_package_is_valid(suite):
    cs = get_cipher_suite(suite)
    priv, pub = cs.generate_signature_key_pair()
    bundle = generate_key_package(suite, Credential.basic(b"alice"), priv, now=1_000_000)
    kp = bundle.key_package
    assert kp.cipher_suite == suite and kp.leaf_node.signature_key == pub
    assert kp.leaf_node.leaf_node_source == LeafNodeSource.KEY_PACKAGE
    assert cs.hpke_public_key(bundle.init_private_key) == kp.init_key
    assert cs.hpke_public_key(bundle.encryption_private_key) == kp.leaf_node.encryption_key
    assert kp.init_key != kp.leaf_node.encryption_key
    lt = kp.leaf_node.lifetime
    assert lt.not_before <= 1_000_000 <= lt.not_after
    # Round trip through the wire envelope, then full section 10.1 validation.
    again = MLSMessage.decode(MLSMessage(kp).encode()).body
    assert isinstance(again, KeyPackage) and again == kp
    validate_key_package(
        cs,
        again,
        cipher_suite=suite,
        group_id=b"g",
        group_extensions=(),
        members=(),
        now=1_000_000,
    )
    with pytest.raises(ValidationError, match="lifetime"):
        validate_key_package(
            cs,
            again,
            cipher_suite=suite,
            group_id=b"g",
            group_extensions=(),
            members=(),
            now=lt.not_after + 1,
        )


def test_last_resort_extension_and_capability():
    cs = get_cipher_suite(1)
    priv, _ = cs.generate_signature_key_pair()
    kp = generate_key_package(1, Credential.basic(b"a"), priv, last_resort=True).key_package
    assert find_extension(kp.extensions, ExtensionType.LAST_RESORT) is not None
    assert ExtensionType.LAST_RESORT in kp.leaf_node.capabilities.extensions
    plain = generate_key_package(1, Credential.basic(b"a"), priv).key_package
    assert find_extension(plain.extensions, ExtensionType.LAST_RESORT) is None


def test_explicit_lifetime_and_fresh_keys():
    cs = get_cipher_suite(1)
    priv, _ = cs.generate_signature_key_pair()
    a = generate_key_package(1, Credential.basic(b"a"), priv, lifetime=Lifetime(5, 10))
    b = generate_key_package(1, Credential.basic(b"a"), priv, lifetime=Lifetime(5, 10))
    assert a.key_package.leaf_node.lifetime == Lifetime(5, 10)
    assert a.key_package.init_key != b.key_package.init_key
