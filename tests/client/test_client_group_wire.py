"""The DS's binary bodies as the client builds and reads them (docs/api.md, Groups)."""

from __future__ import annotations

import json

import pytest

from roost.client.group_wire import (
    QueueItem,
    SignedNotice,
    decode_group_state,
    encode_commit_bundle,
    encode_group_state,
)
from roost.mls import Credential, Group, get_cipher_suite
from roost.mls.codec import Reader, Writer
from roost.mls.errors import DecodeError
from roost.mls.framing import MLSMessage


def _group() -> Group:
    sig, _ = get_cipher_suite(1).generate_signature_key_pair()
    return Group.create(1, Credential.basic(b"alice"), sig)


def test_group_state_round_trip_with_and_without_tree():
    g = _group()
    gi = g.group_info(with_tree=True)
    assert decode_group_state(encode_group_state(gi)) == (gi, b"")
    tree = g.tree.to_bytes()  # the encoded ratchet_tree<V> vector
    content = Reader(tree).opaque()
    assert decode_group_state(encode_group_state(gi, content)) == (gi, tree)
    with pytest.raises(DecodeError):
        decode_group_state(encode_group_state(gi) + b"\x00")


def test_commit_bundle_layout():
    g = _group()
    out = g.commit(force_path=True)
    body = encode_commit_bundle(out.commit, out.group_info, None)
    assert body == out.commit + out.group_info + b"\x00"
    assert MLSMessage.decode(body[: len(out.commit)]).encode() == out.commit
    with_welcome = encode_commit_bundle(out.commit, out.group_info, b"W")
    assert with_welcome.endswith(b"\x01W")


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
    for bad in (_item(3, b"x"), _item(1, b"x") + b"\x00", _item(1, b"x", b"\xff"), b""):
        with pytest.raises(DecodeError):
            QueueItem.decode(bad)


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
