"""A queue id as it appears in paths and bodies (base64url of ``QUEUE_ID_LEN`` bytes), and a
queue key as it appears in the ``Roost-Queue-Key`` header."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from roost.protocol.base64url import unb64u_sized

from ..errors import Problem
from .service import QUEUE_ID_LEN, QUEUE_KEY_LEN

QUEUE_KEY_HEADER = "Roost-Queue-Key"


def queue_id_param(text: str) -> bytes:
    """The queue id in ``text``; anything else is simply not found (404, never a 400 that
    would tell a guessed id's shape from a real one's)."""
    raw = unb64u_sized(text, QUEUE_ID_LEN)
    if raw is None:
        raise Problem(404, "queue_not_found", "no such queue")
    return raw


def queue_key_param(text: str | None) -> bytes | None:
    """The key in a ``Roost-Queue-Key`` header; a malformed one is simply a wrong key (403)."""
    return None if text is None else unb64u_sized(text, QUEUE_KEY_LEN)


def _queue_key_header(
    roost_queue_key: Annotated[
        str | None,
        Header(
            max_length=64,
            description="the queue's key (base64url), from POST /v1/queues; never logged",
        ),
    ] = None,
) -> bytes | None:
    return queue_key_param(roost_queue_key)


# A route parameter: the request's Roost-Queue-Key, decoded (None: absent or malformed).
QueueKey = Annotated[bytes | None, Depends(_queue_key_header)]
