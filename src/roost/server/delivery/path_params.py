"""Path and body identifiers of the group routes: a group id or queue id in base64url."""

from __future__ import annotations

from roost.protocol.base64url import unb64u

from ..errors import Problem
from ..queues.service import QUEUE_ID_LEN
from .tables import GROUP_ID_MAX


def group_id_param(text: str) -> bytes:
    """A group id from its path segment; an undecodable one is simply not found."""
    try:
        raw = unb64u(text)
    except ValueError:
        raw = b""
    if not raw or len(raw) > GROUP_ID_MAX:
        raise Problem(404, "group_not_found", "no such group")
    return raw


def queue_id_param(text: str) -> bytes:
    try:
        raw = unb64u(text)
    except ValueError:
        raw = b""
    if len(raw) != QUEUE_ID_LEN:
        raise Problem(404, "queue_not_found", "no such queue")
    return raw
