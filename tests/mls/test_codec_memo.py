"""Memoised encodings (``codec.Memoized``): LeafNode, KeyPackage and FramedContent keep the
bytes they were decoded from (or first encoded to). The memo must always equal a fresh
encoding, take no part in equality, and never survive ``dataclasses.replace``."""

from __future__ import annotations

import dataclasses

import pytest

from roost.mls.codec import Writer, _memo_of
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.framing import (
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PublicMessage,
    Sender,
)
from roost.mls.key_package import KeyPackage
from roost.mls.key_package_gen import generate_key_package
from roost.mls.leaf_node import LeafNode
from roost.mls.proposals import Proposal, Remove


def _fresh_leaf_content(leaf: LeafNode) -> bytes:
    w = Writer()
    leaf._encode_content(w)
    return w.getvalue()


def _fresh_kp_tbs(kp: KeyPackage) -> bytes:
    w = Writer()
    kp._encode_tbs(w)
    return w.getvalue()


@pytest.fixture(scope="module")
def key_package() -> KeyPackage:
    cs = get_cipher_suite(1)
    priv, _ = cs.generate_signature_key_pair()
    return generate_key_package(1, Credential.basic(b"memo"), priv).key_package


def test_decoded_key_package_memo_is_its_encoding(key_package):
    raw = key_package.encode()
    kp = KeyPackage.decode(raw)
    assert _memo_of(kp) is not None and _memo_of(kp.leaf_node) is not None
    assert kp.tbs() == _fresh_kp_tbs(kp)
    assert kp.leaf_node.content_bytes() == _fresh_leaf_content(kp.leaf_node)
    assert kp.encode() == raw
    assert kp == key_package


def test_replace_drops_the_memo(key_package):
    kp = KeyPackage.decode(key_package.encode())
    leaf = dataclasses.replace(kp.leaf_node, encryption_key=b"\x01" * 32)
    assert _memo_of(leaf) is None
    assert leaf.content_bytes() == _fresh_leaf_content(leaf)
    assert leaf.content_bytes() != kp.leaf_node.content_bytes()
    changed = dataclasses.replace(kp, leaf_node=leaf)
    assert _memo_of(changed) is None
    assert changed.tbs() == _fresh_kp_tbs(changed)
    assert KeyPackage.decode(changed.encode()) == changed
    assert changed != kp


def test_leaf_tbs_binds_group_and_index_for_commit_leaves(key_package):
    from roost.mls.constants import LeafNodeSource

    leaf = dataclasses.replace(
        key_package.leaf_node, leaf_node_source=LeafNodeSource.COMMIT, lifetime=None
    )
    tbs = leaf.tbs(b"group", 3)
    assert tbs == _fresh_leaf_content(leaf) + b"\x05group" + (3).to_bytes(4, "big")
    with pytest.raises(ValueError):
        leaf.tbs()


def test_framed_content_memo_from_decode_and_from_first_encode():
    body = Proposal(Remove(2))
    content = FramedContent(b"g", 4, Sender.member(1), b"ad", body)
    assert _memo_of(content) is None
    first = content.encode()
    assert _memo_of(content) == first
    pm = PublicMessage(content, FramedContentAuthData(b"s"), b"t")
    raw = MLSMessage(pm).encode()
    decoded = MLSMessage.decode(raw).body
    assert _memo_of(decoded.content) == first
    assert decoded.content == content
    other = dataclasses.replace(decoded.content, epoch=5)
    assert other.encode() != first and _memo_of(other) == other.encode()
