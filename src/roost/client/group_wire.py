"""The Delivery Service's binary bodies (docs/api.md, "Groups"): what a client sends and reads.

``RoostGroupState`` (create; group-info answer), ``RoostCommitBundle`` (commit submission),
``RoostQueueItem`` (every entry the DS writes to a member queue) and ``SignedNotice``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from roost.mls.codec import Reader, Writer
from roost.mls.errors import DecodeError

ITEM_MLS_MESSAGE = 1
ITEM_SERVER_NOTICE = 2
NOTICE_LABEL = b"roost notice"


def encode_group_state(group_info: bytes, ratchet_tree: bytes = b"") -> bytes:
    """``MLSMessage group_info || optional<Node> ratchet_tree<V>``; ``ratchet_tree`` is the
    already-encoded vector *content* (empty when the GroupInfo carries the tree extension)."""
    w = Writer()
    w.fixed(group_info)
    w.opaque(ratchet_tree)
    return w.getvalue()


def decode_group_state(body: bytes) -> tuple[bytes, bytes]:
    """Split a ``RoostGroupState`` into (GroupInfo MLSMessage bytes, the encoded
    ``ratchet_tree<V>`` vector, or ``b""`` when it is empty)."""
    from roost.mls.framing import MLSMessage

    r = Reader(body)
    MLSMessage.decode_from(r)
    gi_end = len(body) - r.remaining()
    tree = r.opaque()
    r.finish()
    return body[:gi_end], body[gi_end:] if tree else b""


def encode_commit_bundle(commit: bytes, group_info: bytes, welcome: bytes | None) -> bytes:
    w = Writer()
    w.fixed(commit)
    w.fixed(group_info)
    if welcome is None:
        w.u8(0)
    else:
        w.u8(1)
        w.fixed(welcome)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One ``RoostQueueItem`` from a member queue."""

    item_type: int
    group_id: bytes
    group_seq: int
    policy: str
    body: bytes

    @classmethod
    def decode(cls, payload: bytes) -> QueueItem:
        r = Reader(payload)
        item_type = r.u8()
        if item_type not in (ITEM_MLS_MESSAGE, ITEM_SERVER_NOTICE):
            raise DecodeError(f"unknown queue item type {item_type}")
        group_id = r.opaque()
        seq = r.u64()
        policy = r.opaque()
        body = r.opaque()
        r.finish()
        try:
            policy_text = policy.decode()
        except UnicodeDecodeError as e:
            raise DecodeError("policy is not UTF-8") from e
        return cls(item_type, group_id, seq, policy_text, body)


@dataclass(frozen=True, slots=True)
class SignedNotice:
    notice: bytes  # UTF-8 JSON
    signature: bytes

    @classmethod
    def decode(cls, body: bytes) -> SignedNotice:
        r = Reader(body)
        notice, signature = r.opaque(), r.opaque()
        r.finish()
        return cls(notice, signature)

    def encode(self) -> bytes:
        w = Writer()
        w.opaque(self.notice)
        w.opaque(self.signature)
        return w.getvalue()

    def verified(self, cs: Any, server_signature_key: bytes) -> dict[str, Any]:
        """The notice JSON, once its homeserver signature checks out (else ``ValueError``)."""
        if not cs.verify_with_label(
            server_signature_key, NOTICE_LABEL, self.notice, self.signature
        ):
            raise ValueError("server notice signature does not verify")
        d = json.loads(self.notice)
        if not isinstance(d, dict) or not isinstance(d.get("type"), str):
            raise ValueError("server notice is not a JSON object with a type")
        return d
