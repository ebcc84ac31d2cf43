"""A queue id as it appears in paths and bodies (base64url of ``QUEUE_ID_LEN`` bytes)."""

from __future__ import annotations

from roost.protocol.base64url import unb64u

from ..errors import Problem
from .service import QUEUE_ID_LEN


def queue_id_param(text: str) -> bytes:
    """The queue id in ``text``; anything else is simply not found (404, never a 400 that
    would tell a guessed id's shape from a real one's)."""
    try:
        raw = unb64u(text)
    except ValueError:
        raw = b""
    if len(raw) != QUEUE_ID_LEN:
        raise Problem(404, "queue_not_found", "no such queue")
    return raw
