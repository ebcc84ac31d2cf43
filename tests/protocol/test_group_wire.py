"""The DS's binary bodies as client and server build and read them (docs/api.md, "Groups"):
``RoostGroupState``, ``RoostCommitBundle``, ``RoostQueueItem``, ``SignedNotice``."""

from __future__ import annotations

import json

import pytest

from roost.mls import Credential, Group, get_cipher_suite
from roost.mls.codec import Writer
from roost.mls.errors import DecodeError
from roost.mls.framing import MLSMessage
from roost.protocol.commit_bundle import CommitBundle, decode_commit_bundle, encode_commit_bundle
from roost.protocol.group_state import GroupState, decode_group_state, encode_group_state
from roost.protocol.queue_item import (
    ITEM_MLS_MESSAGE,
    ITEM_SEALED_NOTICE,
    ITEM_SERVER_NOTICE,
    QueueItem,
    decode_queue_item,
    encode_queue_item,
)
from roost.protocol.signed_notice import SignedNotice, sign_notice, verify_notice


def _group() -> Group:
    sig, _ = get_cipher_suite(1).generate_signature_key_pair()
    return Group.create(1, Credential.basic(b"alice"), sig)


def test_group_state_round_trip_with_and_without_tree():
    g = _group()
    gi = g.group_info(with_tree=True)
    # Without a tree (the GroupInfo carries it): an empty vector on the wire, None decoded.
    assert encode_group_state(gi) == gi + b"\x00"
    assert decode_group_state(encode_group_state(gi)) == GroupState(gi, None)
    assert decode_group_state(encode_group_state(gi, b"\x00")) == GroupState(gi, None)
    # With a tree: the encoded ratchet_tree<V> vector (length included) both ways.
    tree = g.tree.to_bytes()
    state = decode_group_state(encode_group_state(gi, tree))
    assert state == GroupState(gi, tree)
    assert isinstance(state, GroupState)
    with pytest.raises(DecodeError):
        decode_group_state(encode_group_state(gi) + b"\x00")
    with pytest.raises(DecodeError):
        decode_group_state(gi[:-1] + b"\x00")


def test_group_state_is_what_a_joiner_needs():
    g = _group()
    state = decode_group_state(encode_group_state(g.group_info(), g.tree.to_bytes()))
    sig, _ = get_cipher_suite(1).generate_signature_key_pair()
    joined, commit = Group.join_external(
        state.group_info, state.ratchet_tree, Credential.basic(b"bob"), sig
    )
    assert joined.epoch == 1 and commit


def test_commit_bundle_round_trip_and_layout():
    g = _group()
    out = g.commit(force_path=True)
    body = encode_commit_bundle(out.commit, out.group_info, None)
    assert body == out.commit + out.group_info + b"\x00"
    assert MLSMessage.decode(body[: len(out.commit)]).encode() == out.commit
    assert decode_commit_bundle(body) == CommitBundle(out.commit, out.group_info, None)
    with_welcome = encode_commit_bundle(out.commit, out.group_info, b"W")
    assert with_welcome.endswith(b"\x01W")
    # A welcome must itself be an MLSMessage: a stray byte does not decode.
    with pytest.raises(DecodeError):
        decode_commit_bundle(with_welcome)
    with pytest.raises(DecodeError):
        decode_commit_bundle(body + b"\x00")


def test_commit_bundle_with_welcome_round_trip():
    g = _group()
    from roost.mls.key_package_gen import generate_key_package

    sig, _ = get_cipher_suite(1).generate_signature_key_pair()
    kp = generate_key_package(1, Credential.basic(b"bob"), sig).key_package
    out = g.commit(add=[kp])
    assert out.welcome is not None
    body = encode_commit_bundle(out.commit, out.group_info, out.welcome)
    assert decode_commit_bundle(body) == CommitBundle(out.commit, out.group_info, out.welcome)


def _item(item_type: int, body: bytes, policy: bytes = b"mute") -> bytes:
    w = Writer()
    w.u8(item_type)
    w.opaque(b"gid@x")
    w.u64(7)
    w.opaque(policy)
    w.opaque(body)
    return w.getvalue()


def test_queue_item_decode_and_errors():
    item = QueueItem.decode(_item(1, b"mls"))
    assert item == QueueItem(1, b"gid@x", 7, "mute", b"mls")
    assert decode_queue_item(_item(1, b"mls")) == item
    for bad in (
        _item(4, b"x"),
        _item(0, b"x"),
        _item(1, b"x") + b"\x00",
        _item(1, b"x", b"\xff"),
        b"",
    ):
        with pytest.raises(DecodeError):
            QueueItem.decode(bad)


def test_queue_item_one_policy_type_both_ways():
    """The server encodes the policy bytes it stores; every reader gets the same ``str``."""
    for policy in ("", "mute", "mentions", "émoji ✓"):
        for item_type in (ITEM_MLS_MESSAGE, ITEM_SERVER_NOTICE, ITEM_SEALED_NOTICE):
            wire = encode_queue_item(b"g@d", 2**40, policy.encode(), item_type, b"body")
            item = QueueItem.decode(wire)
            assert item == QueueItem(item_type, b"g@d", 2**40, policy, b"body")
            assert isinstance(item.policy, str)
            assert item.encode() == wire
    assert _item(2, b"n", b"") == QueueItem(2, b"gid@x", 7, "", b"n").encode()


def test_signed_notice_verification():
    cs = get_cipher_suite(1)
    priv, pub = cs.generate_signature_key_pair()
    notice = json.dumps({"type": "group_deleted", "group_id": "abc"}).encode()
    signed = SignedNotice(notice, cs.sign_with_label(priv, b"roost notice", notice))
    again = SignedNotice.decode(signed.encode())
    assert again.verified(cs, pub)["type"] == "group_deleted"
    _, other = cs.generate_signature_key_pair()
    with pytest.raises(ValueError):
        again.verified(cs, other)
    forged = SignedNotice(notice.replace(b"deleted", b"renamed"), signed.signature)
    with pytest.raises(ValueError):
        forged.verified(cs, pub)


def test_sign_notice_round_trip():
    """What the DS signs, the client verifies: canonical JSON under "roost notice"."""
    cs = get_cipher_suite(1)
    priv, pub = cs.generate_signature_key_pair()
    notice = {"type": "user_deleted", "group_id": "abc", "user_id": "bob@x", "at": 1}
    body = sign_notice(cs, priv, notice)
    assert verify_notice(cs, pub, body) == notice
    assert (
        SignedNotice.decode(body).notice
        == b'{"at":1,"group_id":"abc","type":"user_deleted","user_id":"bob@x"}'
    )
    assert SignedNotice.decode(body).verified(cs, pub) == notice
    _, other = cs.generate_signature_key_pair()
    with pytest.raises(ValueError):
        verify_notice(cs, other, body)
    with pytest.raises(DecodeError):
        verify_notice(cs, pub, body + b"\x00")
    untyped = sign_notice(cs, priv, {"group_id": "abc"})
    with pytest.raises(ValueError):
        verify_notice(cs, pub, untyped)
