"""Notification policies: which wake-ups turn into a push.

The server cannot read messages, so content-based policies (mentions) are the client's
business; the server knows two: ``all`` (push) and ``mute`` (never; ``none`` is an alias).
A per-group policy travels with each queue item (set by the member through the Delivery
Service); an unknown or absent one falls back to the client's registered default.
"""

from __future__ import annotations

ALL = "all"
MUTE = "mute"
DEFAULT_POLICIES = (ALL, MUTE)
_KNOWN = {ALL: ALL, MUTE: MUTE, "none": MUTE}


def effective(attached: str | None, default: str) -> str:
    """The policy that decides one push: the attached one when the server knows it."""
    if attached:
        known = _KNOWN.get(attached.strip().lower())
        if known is not None:
            return known
    return default


def should_push(attached: str | None, default: str) -> bool:
    return effective(attached, default) == ALL
