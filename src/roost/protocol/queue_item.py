"""``RoostQueueItem`` (docs/api.md, "Groups", "What member queues receive"): every payload the
DS writes to a group-message queue.

    uint8 item_type || opaque group_id<V> || uint64 group_seq || opaque policy<V> || opaque body<V>

``policy`` is the member's notification policy for the group: UTF-8 text, ``""`` when unset.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.mls.codec import Reader, encode_varint
from roost.mls.errors import DecodeError

ITEM_MLS_MESSAGE = 1
ITEM_SERVER_NOTICE = 2
ITEM_SEALED_NOTICE = 3  # a SignedNotice sealed under the group key (sealed_notice.py)
ITEM_TYPES = (ITEM_MLS_MESSAGE, ITEM_SERVER_NOTICE, ITEM_SEALED_NOTICE)


def encode_queue_item(
    group_id: bytes, group_seq: int, policy: bytes, item_type: int, body: bytes
) -> bytes:
    """One member's copy of a fanned-out item. ``policy`` is already UTF-8 encoded: the DS
    encodes each member's policy once per fan-out, not once per item."""
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
    item_type: int  # ITEM_MLS_MESSAGE, ITEM_SERVER_NOTICE or ITEM_SEALED_NOTICE
    group_id: bytes
    group_seq: int
    policy: str  # "" when the member set none
    body: bytes  # an MLSMessage (1), a SignedNotice (2) or a sealed one (3)

    @classmethod
    def decode(cls, payload: bytes) -> QueueItem:
        """Strictly decode one item; raises DecodeError on malformed input, an unknown item
        type or a policy that is not UTF-8."""
        r = Reader(payload)
        item_type = r.u8()
        if item_type not in ITEM_TYPES:
            raise DecodeError(f"unknown queue item type {item_type}")
        group_id = r.opaque()
        group_seq = r.u64()
        policy = r.opaque()
        body = r.opaque()
        r.finish()
        try:
            policy_text = policy.decode()
        except UnicodeDecodeError as e:
            raise DecodeError("policy is not UTF-8") from e
        return cls(item_type, group_id, group_seq, policy_text, body)

    def encode(self) -> bytes:
        return encode_queue_item(
            self.group_id, self.group_seq, self.policy.encode(), self.item_type, self.body
        )


def decode_queue_item(payload: bytes) -> QueueItem:
    return QueueItem.decode(payload)
