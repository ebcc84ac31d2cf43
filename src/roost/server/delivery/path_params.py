"""A group id as it appears in the group routes' paths (base64url)."""

from __future__ import annotations

from roost.protocol.base64url import unb64u

from ..errors import Problem
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
