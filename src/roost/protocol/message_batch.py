"""The queue fetch body, media type ``application/vnd.roost.messages`` (docs/api.md,
"Queues"): entries ``uint64 seq || opaque payload<V>`` in ascending seq. The realtime delivery
frame carries the same entries."""

from __future__ import annotations

from collections.abc import Iterable

from roost.mls.codec import Reader, Writer


def encode_message_batch(entries: Iterable[tuple[int, bytes]]) -> bytes:
    w = Writer()
    for seq, payload in entries:
        w.u64(seq)
        w.opaque(payload)
    return w.getvalue()


def decode_message_batch(body: bytes) -> list[tuple[int, bytes]]:
    """The (seq, payload) entries; raises DecodeError on a truncated body."""
    r = Reader(body)
    out: list[tuple[int, bytes]] = []
    while r.remaining():
        seq = r.u64()
        out.append((seq, r.opaque()))
    return out
