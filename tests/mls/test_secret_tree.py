"""secret-tree.json (every leaf, every listed generation, sender data) and ratchet rules."""

from __future__ import annotations

import pytest

from roost.mls.constants import ContentType
from roost.mls.crypto import get_cipher_suite
from roost.mls.errors import ValidationError
from roost.mls.secret_tree import HashRatchet, SecretTree, sender_data_key_nonce

from .vectors import cases, h


def _ids(i, c):
    return f"{i}-suite{c['cipher_suite']}-{len(c['leaves'])}leaves"


@pytest.mark.parametrize("case", cases("secret-tree", ids=_ids))
def test_secret_tree_vector(case):
    cs = get_cipher_suite(case["cipher_suite"])
    sd = case["sender_data"]
    key, nonce = sender_data_key_nonce(cs, h(sd["sender_data_secret"]), h(sd["ciphertext"]))
    assert (key, nonce) == (h(sd["key"]), h(sd["nonce"]))

    tree = SecretTree(cs, h(case["encryption_secret"]), len(case["leaves"]))
    for leaf, generations in enumerate(case["leaves"]):
        for g in generations:
            gen = g["generation"]
            hs = tree.ratchet(leaf, ContentType.COMMIT)
            assert hs.get(gen) == (h(g["handshake_key"]), h(g["handshake_nonce"]))
            app = tree.ratchet(leaf, ContentType.APPLICATION)
            assert app.get(gen) == (h(g["application_key"]), h(g["application_nonce"]))
    # Every node secret was consumed on the way down to the leaves.
    assert tree.held_node_secrets == 0


def test_sender_and_receiver_agree_out_of_order():
    cs = get_cipher_suite(1)
    sender = HashRatchet(cs, b"s" * 32)
    receiver = HashRatchet(cs, b"s" * 32)
    sent = [sender.next() for _ in range(5)]
    assert [g for g, _, _ in sent] == [0, 1, 2, 3, 4]
    for gen in (3, 0, 4, 1, 2):
        _, key, nonce = sent[gen]
        assert receiver.get(gen) == (key, nonce)
        assert receiver.get(gen) == (key, nonce)  # still there until consumed
        receiver.consume(gen)
        with pytest.raises(ValidationError):
            receiver.get(gen)


def test_window_bounds():
    cs = get_cipher_suite(1)
    r = HashRatchet(cs, b"s" * 32, window=10)
    with pytest.raises(ValidationError):
        r.get(10)  # too far ahead
    r.get(9)
    r.get(18)  # moves the window: generations below 9 are dropped
    with pytest.raises(ValidationError):
        r.get(8)
    r.get(9)


def test_leaf_bounds_and_deletion():
    cs = get_cipher_suite(1)
    tree = SecretTree(cs, b"e" * 32, 4)
    with pytest.raises(ValidationError):
        tree.ratchet(4, ContentType.APPLICATION)
    tree.ratchet(0, ContentType.APPLICATION)
    # root deleted; its right child and the sibling leaf of 0 remain
    assert tree.held_node_secrets == 2
    a = tree.ratchet(3, ContentType.APPLICATION).get(0)
    other = SecretTree(cs, b"e" * 32, 4)
    assert other.ratchet(3, ContentType.APPLICATION).get(0) == a
    assert other.ratchet(3, ContentType.PROPOSAL).get(0) != a


def test_single_leaf_tree():
    cs = get_cipher_suite(2)
    tree = SecretTree(cs, b"e" * 32, 1)
    gen, key, nonce = tree.ratchet(0, ContentType.APPLICATION).next()
    assert gen == 0 and len(key) == 16 and len(nonce) == 12


def test_state_roundtrip_preserves_keys_and_deletions():
    cs = get_cipher_suite(1)
    tree = SecretTree(cs, b"e" * 32, 8, window=50)
    reference = SecretTree(cs, b"e" * 32, 8, window=50)
    tree.ratchet(2, ContentType.APPLICATION).get(5)  # keeps 0..5 as skipped keys
    tree.ratchet(2, ContentType.APPLICATION).consume(3)
    tree.ratchet(5, ContentType.COMMIT).next()
    restored = SecretTree.decode_state(cs, tree.encode_state())
    assert restored.encode_state() == tree.encode_state()
    assert restored.held_node_secrets == tree.held_node_secrets
    app = restored.ratchet(2, ContentType.APPLICATION)
    ref_app = reference.ratchet(2, ContentType.APPLICATION)
    assert app.get(1) == ref_app.get(1)
    with pytest.raises(ValidationError):
        app.get(3)  # consumed before saving
    assert app.get(9) == ref_app.get(9)
    assert restored.ratchet(5, ContentType.COMMIT).next()[0] == 1
    assert restored.ratchet(7, ContentType.PROPOSAL).get(0) == reference.ratchet(
        7, ContentType.PROPOSAL
    ).get(0)
    from roost.mls.errors import DecodeError

    with pytest.raises(DecodeError):
        SecretTree.decode_state(cs, tree.encode_state() + b"\x00")
