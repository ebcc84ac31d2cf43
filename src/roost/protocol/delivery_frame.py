"""The realtime binary delivery frame (docs/api.md, "Realtime (WebSocket)", "Frames"): one or
more consecutive items of one queue, pushed by the server.

    uint8 kind || opaque queue_id[16] (kind 1 only) || (uint64 seq || opaque payload<V>)+

The entries are the queue fetch format (``message_batch``), so payloads are never base64'd.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from roost.mls.codec import Reader, encode_varint
from roost.mls.errors import DecodeError

KIND_GROUP_QUEUE = 1
KIND_DIRECT_QUEUE = 2
QUEUE_ID_LEN = 16

_SEQ = struct.Struct(">Q")


def encode_delivery_frame(queue_id: bytes | None, items: Iterable[tuple[int, bytes]]) -> bytes:
    """A frame for a group queue (its raw 16-byte id) or, with ``None``, the direct queue;
    built with one join (the server's hot path)."""
    parts: list[bytes] = [
        bytes((KIND_DIRECT_QUEUE,)) if queue_id is None else bytes((KIND_GROUP_QUEUE,)) + queue_id
    ]
    pack = _SEQ.pack
    for seq, payload in items:
        parts.append(pack(seq))
        parts.append(encode_varint(len(payload)))
        parts.append(payload)
    return b"".join(parts)


def decode_delivery_frame(frame: bytes) -> tuple[bytes | None, list[tuple[int, bytes]]]:
    """The raw queue id (None for the direct queue) and the (seq, payload) entries; raises
    DecodeError on an unknown kind, a frame without entries or a truncated one."""
    r = Reader(frame)
    kind = r.u8()
    if kind == KIND_GROUP_QUEUE:
        queue_id: bytes | None = r.fixed(QUEUE_ID_LEN)
    elif kind == KIND_DIRECT_QUEUE:
        queue_id = None
    else:
        raise DecodeError(f"unknown delivery kind {kind}")
    entries: list[tuple[int, bytes]] = []
    while r.remaining():
        seq = r.u64()
        entries.append((seq, r.opaque()))
    if not entries:
        raise DecodeError("delivery frame without entries")
    return queue_id, entries
