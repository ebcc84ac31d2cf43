"""``opaque a<V> || opaque b<V> || ...``: the signed contents of the auth proofs
(docs/api.md, "Authentication": the token challenge and the registration proof)."""

from __future__ import annotations

from roost.mls.codec import Writer


def opaque_concat(*parts: bytes) -> bytes:
    """Each part as an MLS variable-length vector, one after the other."""
    w = Writer()
    for p in parts:
        w.opaque(p)
    return w.getvalue()
