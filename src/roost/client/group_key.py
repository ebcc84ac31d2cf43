"""A group's key (docs/api.md, "Group keys"): 32 random bytes the creator chooses. Members
present it with every request on the group (``Roost-Group-Key``, base64url) and the Delivery
Service, which keeps a check value of it, refuses requests without it; a group without one (made
before group keys) asks for none, and its requests carry no header.

Joiners get it with their Welcome: the committer wraps it (``Roost-Group-Key-Wrap`` on the
commit; the DS copies it into each ``welcome`` event as ``group_key_wrap``) as
``nonce(12) || AES-256-GCM(wrap_key, nonce, group_key, aad=group_id)``, where ``wrap_key`` is
the MLS exporter ``("roost group key", group_id, 32)`` of the epoch the commit creates — the
epoch the joiners start in, so only they and the members can unwrap it.

The key is a secret: it stays out of reprs, logs and error messages.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from roost.protocol.base64url import b64u, unb64u

GROUP_KEY_HEADER = "Roost-Group-Key"
GROUP_KEY_WRAP_HEADER = "Roost-Group-Key-Wrap"
EXPORTER_LABEL = b"roost group key"
KEY_BYTES = 32
_NONCE_BYTES = 12
WRAP_BYTES = _NONCE_BYTES + KEY_BYTES + 16  # nonce, key, GCM tag: 60


# An epoch's MLS exporter: (label, context, length) -> secret (``Group.export_secret``,
# ``Group.pending_export_secret``, ``WelcomeToJoin.export_secret``).
Exporter = Callable[[bytes, bytes, int], bytes]


class GroupKeyError(ValueError):
    """A group key or its wrap that cannot be used (malformed, or not for this epoch/group)."""


def new_group_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_headers(key: bytes | None) -> dict[str, str]:
    """The request header that presents a group's key (none for a legacy group)."""
    return {GROUP_KEY_HEADER: b64u(key)} if key else {}


def parse_group_key(text: str) -> bytes:
    """A key as given by a user or an invitation (base64url, padding optional)."""
    try:
        key = unb64u(text.strip())
    except ValueError as e:
        raise GroupKeyError("a group key is base64url") from e
    if len(key) != KEY_BYTES:
        raise GroupKeyError(f"a group key is {KEY_BYTES} bytes")
    return key


def wrap_key_of(export: Exporter, group_id: bytes) -> bytes:
    """The key that wraps a group's key for the joiners of an epoch (its exporter's)."""
    return export(EXPORTER_LABEL, group_id, KEY_BYTES)


def wrap_group_key(group_key: bytes, group_id: bytes, wrap_key: bytes) -> str:
    """The ``Roost-Group-Key-Wrap`` value: base64url of nonce || AES-256-GCM(group_key)."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return b64u(nonce + AESGCM(wrap_key).encrypt(nonce, group_key, group_id))


def unwrap_group_key(wrap: str, group_id: bytes, wrap_key: bytes) -> bytes:
    """The group key from a Welcome's ``group_key_wrap``; ``GroupKeyError`` when it is
    malformed or was not wrapped for this group and epoch."""
    try:
        raw = unb64u(wrap)
    except ValueError as e:
        raise GroupKeyError("the group key wrap is not base64url") from e
    if len(raw) != WRAP_BYTES:
        raise GroupKeyError(f"the group key wrap is {len(raw)} bytes, not {WRAP_BYTES}")
    try:
        key = AESGCM(wrap_key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], group_id)
    except InvalidTag as e:
        raise GroupKeyError("the group key wrap does not open with this epoch's secret") from e
    return key
