"""User ids (docs/api.md, "Identifiers"): ``name@domain``, compared without case or surrounding
space, so both ends read an id the way the server stores it."""

from __future__ import annotations


def canonical_user_id(user_id: str) -> str:
    return user_id.strip().lower()
