"""Reading one MLSMessage inside a larger body and keeping its exact bytes (the bodies of
docs/api.md, "Groups", that carry several MLS objects)."""

from __future__ import annotations

from roost.mls.codec import Reader
from roost.mls.framing import MLSMessage


def mls_message_span(r: Reader) -> bytes:
    """Decode one MLSMessage at ``r`` (strictly) and return its exact bytes."""
    start = r.pos
    MLSMessage.decode_from(r)
    return bytes(r.data[start : r.pos])
