"""The smaller formats of docs/api.md: base64url, the auth proofs' ``opaque_concat``, queue
fetch batches, realtime delivery frames and KeyPackage batches."""

from __future__ import annotations

import pytest

from roost.mls import Credential, get_cipher_suite
from roost.mls.codec import Reader
from roost.mls.errors import DecodeError
from roost.mls.framing import MLSMessage
from roost.mls.key_package_gen import generate_key_package
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.delivery_frame import (
    KIND_DIRECT_QUEUE,
    KIND_GROUP_QUEUE,
    decode_delivery_frame,
    encode_delivery_frame,
)
from roost.protocol.key_package_batch import (
    decode_key_package_batch,
    encode_key_package_batch,
    join_mls_vector,
    mls_vector_reader,
)
from roost.protocol.message_batch import decode_message_batch, encode_message_batch
from roost.protocol.opaque import opaque_concat


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xfb\xff", bytes(range(256)), b"ab", b"abc"])
def test_b64u_round_trip_without_padding(data: bytes):
    text = b64u(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert unb64u(text) == data
    assert unb64u(text + "=" * (-len(text) % 4)) == data  # padded input is accepted too


def test_unb64u_refuses_bad_input_with_value_error():
    for bad in ("a", "ab$c", "abcde"):
        with pytest.raises(ValueError):
            unb64u(bad)


def test_opaque_concat_is_mls_vectors_in_a_row():
    body = opaque_concat(b"localhost", b"alice@localhost/x", b"\x01" * 32)
    r = Reader(body)
    assert [r.opaque(), r.opaque(), r.opaque()] == [
        b"localhost",
        b"alice@localhost/x",
        b"\x01" * 32,
    ]
    r.finish()
    assert opaque_concat() == b""


def test_message_batch_round_trip():
    entries = [(1, b"a"), (2, b""), (2**63, b"x" * 70000)]
    body = encode_message_batch(entries)
    assert decode_message_batch(body) == entries
    assert decode_message_batch(b"") == []
    with pytest.raises(DecodeError):
        decode_message_batch(body[:-1])


def _kp(name: bytes, last_resort: bool = False):
    sig, _ = get_cipher_suite(1).generate_signature_key_pair()
    return generate_key_package(1, Credential.basic(name), sig, last_resort=last_resort).key_package


def test_key_package_batch_round_trip():
    kps = [_kp(b"a"), _kp(b"b", last_resort=True)]
    body = encode_key_package_batch(kps)
    assert [k.encode() for k in decode_key_package_batch(body)] == [k.encode() for k in kps]
    # Already-encoded MLSMessages go in as they are.
    assert encode_key_package_batch([MLSMessage(k).encode() for k in kps]) == body
    assert encode_key_package_batch([]) == b"\x00"
    assert decode_key_package_batch(b"\x00") == []
    r = mls_vector_reader(body)
    assert r.data[r.pos :] == b"".join(MLSMessage(k).encode() for k in kps)
    assert join_mls_vector([MLSMessage(k).encode() for k in kps]) == body


def test_key_package_batch_errors():
    kps = [_kp(b"a")]
    body = encode_key_package_batch(kps)
    with pytest.raises(DecodeError):
        decode_key_package_batch(body + b"\x00")
    with pytest.raises(DecodeError):
        mls_vector_reader(body[:-1])
    # A vector holding something other than a KeyPackage MLSMessage.
    sig, _ = get_cipher_suite(1).generate_signature_key_pair()
    from roost.mls import Group

    gi = Group.create(1, Credential.basic(b"x"), sig).group_info()
    with pytest.raises(DecodeError):
        decode_key_package_batch(join_mls_vector([gi]))


def test_delivery_frame_round_trip():
    queue_id = bytes(range(16))
    entries = [(5, b"one"), (6, b""), (2**63 - 1, b"z" * 300)]
    frame = encode_delivery_frame(queue_id, entries)
    assert frame[0] == KIND_GROUP_QUEUE and frame[1:17] == queue_id
    assert frame[17:] == encode_message_batch(entries)  # the fetch entries, as they are
    assert decode_delivery_frame(frame) == (queue_id, entries)
    direct = encode_delivery_frame(None, [(1, b"{}")])
    assert direct[0] == KIND_DIRECT_QUEUE
    assert decode_delivery_frame(direct) == (None, [(1, b"{}")])


def test_delivery_frame_errors():
    for bad in (
        b"",
        b"\x03" + encode_message_batch([(1, b"x")]),  # unknown kind
        encode_delivery_frame(None, []),  # no entries
        encode_delivery_frame(bytes(16), []),
        encode_delivery_frame(None, [(1, b"xy")])[:-1],  # truncated
        b"\x01" + bytes(15),  # short queue id
    ):
        with pytest.raises(DecodeError):
            decode_delivery_frame(bad)
