"""The strict check of a GroupInfo's extensions (RFC 9420 §11.1, §12.1.8.1, §12.4.3.2-3):
what a group really sends passes, on every suite; each malformed form is named."""

from __future__ import annotations

import pytest

from roost.mls import MLSMessage
from roost.mls.codec import opaque
from roost.mls.constants import ExtensionType
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES, get_cipher_suite
from roost.mls.extension_types import (
    ExternalPub,
    ExternalSender,
    ExternalSenders,
    RequiredCapabilities,
)
from roost.mls.extensions import Extension
from roost.mls.group import Group
from roost.mls.group_info import GroupInfo
from roost.mls.group_info_extensions import (
    MalformedExtension,
    check_extensions,
    check_group_info_extensions,
)


def _sender(suite: int) -> ExternalSender:
    _, pub = get_cipher_suite(suite).generate_signature_key_pair()
    return ExternalSender(pub, Credential.basic(b"server"))


@pytest.mark.parametrize("suite", sorted(SUPPORTED_SUITES))
def test_a_real_group_info_passes(suite: int) -> None:
    cs = get_cipher_suite(suite)
    priv, pub = cs.generate_signature_key_pair()
    exts = [
        ExternalSenders((_sender(suite),)).to_extension(),
        RequiredCapabilities((), (), (1, 2)).to_extension(),
    ]
    group = Group.create(suite, Credential.basic(b"alice"), priv, extensions=exts)
    gi = MLSMessage.decode(group.group_info(with_tree=True)).body
    assert isinstance(gi, GroupInfo)
    assert {e.extension_type for e in gi.extensions} == {
        ExtensionType.EXTERNAL_PUB,
        ExtensionType.RATCHET_TREE,
    }
    check_group_info_extensions(gi)


@pytest.mark.parametrize("suite", sorted(SUPPORTED_SUITES))
def test_external_pub_must_be_a_kem_key_with_its_length_prefix(suite: int) -> None:
    cs = get_cipher_suite(suite)
    _, key = cs.generate_hpke_key_pair()
    check_extensions(cs, [ExternalPub(key).to_extension()])
    bad = [
        Extension(ExtensionType.EXTERNAL_PUB, key),  # the bare key (ts-mls 1.6.4)
        ExternalPub(key[:-1]).to_extension(),
        ExternalPub(key + b"\x00").to_extension(),
        Extension(ExtensionType.EXTERNAL_PUB, opaque(key) + b"\x00"),
    ]
    for ext in bad:
        with pytest.raises(MalformedExtension) as e:
            check_extensions(cs, [ext])
        assert e.value.name == "external_pub"


def test_external_pub_point_must_be_on_the_curve() -> None:
    cs = get_cipher_suite(2)  # P-256
    _, key = cs.generate_hpke_key_pair()
    off_curve = key[:-1] + bytes([key[-1] ^ 1])
    with pytest.raises(MalformedExtension, match="external_pub"):
        check_extensions(cs, [ExternalPub(off_curve).to_extension()])


@pytest.mark.parametrize("suite", sorted(SUPPORTED_SUITES))
def test_external_senders_keys_of_the_suite(suite: int) -> None:
    cs = get_cipher_suite(suite)
    good = _sender(suite)
    check_extensions(cs, [ExternalSenders((good,)).to_extension()])
    short = ExternalSender(good.signature_key[:-1], good.credential)
    for ext in (
        ExternalSenders((good, short)).to_extension(),
        Extension(ExtensionType.EXTERNAL_SENDERS, good.encode()),  # one sender, not a vector
        Extension(ExtensionType.EXTERNAL_SENDERS, ExternalSenders((good,)).encode() + b"\x00"),
    ):
        with pytest.raises(MalformedExtension) as e:
            check_extensions(cs, [ext])
        assert e.value.name == "external_senders"


def test_ratchet_tree_and_required_capabilities_decode_exactly() -> None:
    cs = get_cipher_suite(1)
    for ext, name in (
        (Extension(ExtensionType.RATCHET_TREE, b"\x00"), "ratchet_tree"),
        (Extension(ExtensionType.RATCHET_TREE, b"\x03\x01\x02\x03"), "ratchet_tree"),
        (
            Extension(ExtensionType.REQUIRED_CAPABILITIES, b"\x00\x00\x00\x00"),
            "required_capabilities",
        ),
        (
            Extension(ExtensionType.REQUIRED_CAPABILITIES, opaque(b"\x00\x0a\x00") + b"\x00\x00"),
            "required_capabilities",
        ),
    ):
        with pytest.raises(MalformedExtension) as e:
            check_extensions(cs, [ext])
        assert e.value.name == name
    # Unknown types are not this check's business.
    check_extensions(cs, [Extension(0xF0F0, b"anything")])
