"""The group key: 32 random bytes the group's creator chooses and every member holds (docs/api.md
"Group keys"). Members present it with every request on the group (``Roost-Group-Key``); the DS
keeps only a check value (a hash), so a member's requests prove they hold it. Joiners get it
from the committer, wrapped for the epoch their Welcome starts (``group_key_wrap.py``): the DS
passes the wrap on and cannot open it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Header

from roost.protocol.base64url import unb64u_sized

from ..errors import Problem

GROUP_KEY_HEADER = "Roost-Group-Key"
GROUP_KEY_LEN = 32


def key_check(group_key: bytes) -> bytes:
    """What the DS stores of a group key: enough to recognise it, nothing to recover it."""
    return hashlib.sha256(b"roost group key check v1" + group_key).digest()


def key_refusal(stored: bytes | None, presented: bytes | None) -> Problem | None:
    """Why a request presenting ``presented`` may not act on a group whose check value is
    ``stored`` (None: a group made without a key, which asks for none)."""
    if stored is None:
        return None
    if presented is None:
        return Problem(403, "group_key_required", "this group's requests carry its group key")
    if not hmac.compare_digest(key_check(presented), stored):
        return Problem(403, "wrong_group_key", "the group key does not match this group")
    return None


def group_key_param(text: str | None) -> bytes | None:
    if text is None:
        return None
    raw = unb64u_sized(text, GROUP_KEY_LEN)
    if raw is None:
        raise Problem(422, "invalid_group_key", "a group key is 32 bytes, base64url")
    return raw


def _group_key_header(
    roost_group_key: Annotated[
        str | None,
        Header(
            max_length=64,
            description="the group's key (base64url) for groups created with one; never logged",
        ),
    ] = None,
) -> bytes | None:
    return group_key_param(roost_group_key)


# A route parameter: the request's group key, decoded (None: absent).
GroupKey = Annotated[bytes | None, Depends(_group_key_header)]
