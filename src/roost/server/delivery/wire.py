"""The DS's wire structures (docs/api.md "Groups"): request bundles, queue items, notices.

All binary, in TLS presentation language like MLS itself, so no payload is ever base64'd or
copied through JSON on the hot path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from roost.mls.codec import Reader, Writer, encode_varint
from roost.mls.constants import ContentType, WireFormat
from roost.mls.errors import DecodeError
from roost.mls.framing import MLSMessage, PrivateMessage, PublicMessage

ITEM_MLS_MESSAGE = 1
ITEM_SERVER_NOTICE = 2
NOTICE_LABEL = b"roost notice"


@dataclass(frozen=True, slots=True)
class GroupStateBundle:
    """``RoostGroupState``: the GroupInfo MLSMessage and the (possibly empty) encoded tree."""

    group_info: bytes  # the MLSMessage bytes
    ratchet_tree: bytes | None  # ``optional<Node> ratchet_tree<V>`` with its length, or None


def _message_span(r: Reader) -> bytes:
    """Decode one MLSMessage at ``r`` and return its exact bytes (strictly decoded)."""
    start = r.pos
    MLSMessage.decode_from(r)
    return r.data[start : r.pos]


def decode_group_state(body: bytes) -> GroupStateBundle:
    r = Reader(body)
    gi = _message_span(r)
    start = r.pos
    n = r.varint()
    r.fixed(n)
    r.finish()
    return GroupStateBundle(gi, body[start:] if n else None)


def encode_group_state(group_info: bytes, ratchet_tree: bytes) -> bytes:
    return group_info + ratchet_tree


@dataclass(frozen=True, slots=True)
class CommitBundle:
    commit: bytes
    group_info: bytes
    welcome: bytes | None


def decode_commit_bundle(body: bytes) -> CommitBundle:
    r = Reader(body)
    commit = _message_span(r)
    gi = _message_span(r)
    welcome = r.optional(_message_span)
    r.finish()
    return CommitBundle(commit, gi, welcome)


def encode_commit_bundle(commit: bytes, group_info: bytes, welcome: bytes | None) -> bytes:
    tail = b"\x00" if welcome is None else b"\x01" + welcome
    return commit + group_info + tail


@dataclass(frozen=True, slots=True)
class AppHeader:
    """The cleartext header of a PrivateMessage, read without decoding the ciphertext."""

    group_id: bytes
    epoch: int
    content_type: int


def read_private_header(body: bytes) -> AppHeader:
    """Hot path: check the envelope and read group id, epoch and content type; the rest of
    the message must still be well formed (strictly decoded)."""
    r = Reader(body)
    if r.u16() != 1:
        raise DecodeError("unsupported protocol version")
    wf = r.u16()
    if wf != WireFormat.PRIVATE_MESSAGE:
        raise WrongWireFormat(wf)
    pm = PrivateMessage.decode_from(r)
    r.finish()
    return AppHeader(pm.group_id, pm.epoch, int(pm.content_type))


class WrongWireFormat(Exception):
    def __init__(self, wire_format: int) -> None:
        super().__init__(f"wire format {wire_format}")
        self.wire_format = wire_format


def public_message(body: bytes) -> PublicMessage:
    msg = MLSMessage.decode(body)
    if not isinstance(msg.body, PublicMessage):
        raise WrongWireFormat(int(msg.wire_format))
    return msg.body


def is_application(content_type: int) -> bool:
    return content_type == ContentType.APPLICATION


def queue_item(
    group_id: bytes, group_seq: int, policy: bytes, item_type: int, body: bytes
) -> bytes:
    """``RoostQueueItem``: one member's copy of a fanned-out item (policy attached)."""
    return b"".join(
        (
            bytes((item_type,)),
            encode_varint(len(group_id)),
            group_id,
            group_seq.to_bytes(8, "big"),
            encode_varint(len(policy)),
            policy,
            encode_varint(len(body)),
            body,
        )
    )


@dataclass(frozen=True, slots=True)
class QueueItem:
    item_type: int
    group_id: bytes
    group_seq: int
    policy: bytes
    body: bytes


def decode_queue_item(data: bytes) -> QueueItem:
    r = Reader(data)
    item = QueueItem(r.u8(), r.opaque(), r.u64(), r.opaque(), r.opaque())
    r.finish()
    return item


def signed_notice(cs, signature_private_key: bytes, notice: dict) -> bytes:  # type: ignore[no-untyped-def]
    """``SignedNotice``: canonical JSON signed with the homeserver's external-sender key."""
    content = json.dumps(notice, sort_keys=True, separators=(",", ":")).encode()
    sig = cs.sign_with_label(signature_private_key, NOTICE_LABEL, content)
    w = Writer()
    w.opaque(content)
    w.opaque(sig)
    return w.getvalue()


def verify_notice(cs, signature_key: bytes, data: bytes) -> dict:  # type: ignore[no-untyped-def]
    """Client side: the notice JSON if the homeserver's signature is valid, else ValueError."""
    r = Reader(data)
    content, sig = r.opaque(), r.opaque()
    r.finish()
    if not cs.verify_with_label(signature_key, NOTICE_LABEL, content, sig):
        raise ValueError("notice signature invalid")
    return json.loads(content)
