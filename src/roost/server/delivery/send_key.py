"""The opaque key of an application send's idempotency record (``ds_sends.send_key``).

A retried send is recognised by (group, sending client, message id). The record stores only
a SHA-256 of the three, so a database copy does not say who sent which message. The message id
is chosen by the client and kept nowhere else on the server (not with the queued item, not in
logs), so the key cannot be tied to a client without it: recomputing it needs the message id,
and Roost's clients pick a random one (a UUID4) per send.
"""

from __future__ import annotations

import hashlib

SEND_KEY_BYTES = 32
_LABEL = b"roost ds send key v1"


def send_key(group_id: bytes, client_uuid: str, message_id: str) -> bytes:
    """SHA-256 over the label and each part length-prefixed (no two triples give one input)."""
    h = hashlib.sha256(_LABEL)
    for part in (group_id, client_uuid.encode(), message_id.encode()):
        h.update(len(part).to_bytes(2, "big"))
        h.update(part)
    return h.digest()
