"""A Welcome without the ratchet tree (RFC 9420 section 12.4.3.3): the joiner opens it, learns
the group and epoch, and joins with a tree given out of band, which gets the same checks as a
tree in the Welcome."""

from __future__ import annotations

import pytest

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import ValidationError
from roost.mls.group import Group
from roost.mls.key_package_gen import generate_key_package

SUITE = 1


def _member(name: bytes) -> Group:
    cs = get_cipher_suite(SUITE)
    priv, _ = cs.generate_signature_key_pair()
    return Group.create(SUITE, Credential.basic(name), priv)


def _kp(name: bytes):
    cs = get_cipher_suite(SUITE)
    priv, _ = cs.generate_signature_key_pair()
    return generate_key_package(SUITE, Credential.basic(name), priv)


def test_welcome_without_tree_joins_with_the_tree_given_out_of_band():
    alice = _member(b"alice")
    carol = _kp(b"carol")
    bob = _kp(b"bob")
    out = alice.commit(add=[carol.key_package, bob.key_package], ratchet_tree_in_welcome=False)
    alice.merge_pending_commit()
    assert out.welcome is not None

    with pytest.raises(ValidationError, match="no ratchet tree"):
        Group.join_from_welcome(out.welcome, bob)
    opened = Group.open_welcome(out.welcome, bob)
    assert not opened.opened.carries_ratchet_tree
    assert (opened.opened.group_id, opened.opened.epoch) == (alice.group_id, alice.epoch)

    joined = Group.join_opened(opened, alice.tree.to_bytes())
    assert joined.epoch_authenticator == alice.epoch_authenticator
    got = joined.process(alice.encrypt(b"hi"))
    assert got.data == b"hi"


def test_a_tree_of_another_epoch_fails_the_tree_hash_check():
    alice = _member(b"alice")
    bob = _kp(b"bob")
    before = alice.tree.to_bytes()
    out = alice.commit(add=[bob.key_package], force_path=True, ratchet_tree_in_welcome=False)
    assert out.welcome is not None
    opened = Group.open_welcome(out.welcome, bob)
    with pytest.raises(ValidationError, match="tree_hash"):
        Group.join_opened(opened, before)
    # The Welcome is still good with the right tree: a failed check changes nothing.
    alice.merge_pending_commit()
    joined = Group.join_opened(opened, alice.tree.to_bytes())
    assert joined.epoch_authenticator == alice.epoch_authenticator


def test_default_welcome_carries_the_tree():
    alice = _member(b"alice")
    bob = _kp(b"bob")
    out = alice.commit(add=[bob.key_package])
    assert out.welcome is not None
    assert Group.open_welcome(out.welcome, bob).opened.carries_ratchet_tree
    alice.merge_pending_commit()
    assert Group.join_from_welcome(out.welcome, bob).epoch_authenticator == (
        alice.epoch_authenticator
    )
