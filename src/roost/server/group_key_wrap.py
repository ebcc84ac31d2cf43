"""The group key wrap a client hands the server for joiners (``Roost-Group-Key-Wrap``): the
group's key sealed under the MLS exporter of the epoch the joiners start in (docs/api.md "Group
keys"). The server cannot open it; it checks the size and passes it on with the Welcome — in a
``welcome`` event (a commit's Welcome) or a ``connection_request`` event (a request's Welcome).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from roost.protocol.base64url import b64u, unb64u_sized

from .errors import Problem

# nonce (12) || AES-256-GCM(group key (32)) with its tag (16)
GROUP_KEY_WRAP_LEN = 60
GROUP_KEY_WRAP_FIELD = "group_key_wrap"


def group_key_wrap_param(text: str | None) -> bytes | None:
    if text is None:
        return None
    raw = unb64u_sized(text, GROUP_KEY_WRAP_LEN)
    if raw is None:
        raise Problem(
            422, "invalid_group_key", "a group key wrap is 60 bytes (nonce and sealed key)"
        )
    return raw


def wrap_field(wrap: bytes | None) -> dict[str, str]:
    """The event field that carries ``wrap`` to the joiner (none without a wrap)."""
    return {} if wrap is None else {GROUP_KEY_WRAP_FIELD: b64u(wrap)}


def _group_key_wrap_header(
    roost_group_key_wrap: Annotated[
        str | None,
        Header(
            max_length=100,
            description="the group key wrapped for the joiners of the Welcome sent along",
        ),
    ] = None,
) -> bytes | None:
    return group_key_wrap_param(roost_group_key_wrap)


# A route parameter: the request's group key wrap, decoded (None: absent).
GroupKeyWrap = Annotated[bytes | None, Depends(_group_key_wrap_header)]
