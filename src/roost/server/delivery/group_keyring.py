"""The group keys this process has seen verified, in memory only (docs/privacy.md, "The Delivery
Service's state").

A group made with a key has its stored state sealed under a key derived from the group key and
the server's seal key file together: the DS can open it only while it holds the group key,
which it learns from a member's request (``GroupStore.require_key``) and never writes down.
Evicted or lost with a restart, a key comes back with the group's next request.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..seal import Seal
from ..seal_key import SealKeyFile

KEYRING_SIZE = 100_000
# The DS state's seal label, under the file's key or a group's (at_rest.py).
STATE_SEAL_LABEL = b"roost ds state seal v1"


@dataclass(frozen=True, slots=True)
class GroupSecrets:
    """What one group key opens: the state seal and the role-row reference key."""

    group_key: bytes
    state_seal: Seal
    ref_key: bytes


class GroupKeyring:
    def __init__(self, key_file: SealKeyFile, size: int = KEYRING_SIZE) -> None:
        self._key_file = key_file
        self._size = size
        self._salt: bytes | None = None  # derived on first use: start-up reads no file
        self._known: OrderedDict[bytes, GroupSecrets] = OrderedDict()

    def get(self, group_id: bytes) -> GroupSecrets | None:
        hit = self._known.get(group_id)
        if hit is not None:
            self._known.move_to_end(group_id)
        return hit

    def holds(self, group_id: bytes, group_key: bytes | None) -> bool:
        """Whether ``group_key`` is the verified key this process holds for the group."""
        hit = self._known.get(group_id)
        return (
            hit is not None
            and group_key is not None
            and hmac.compare_digest(hit.group_key, group_key)
        )

    def derive(self, group_id: bytes, group_key: bytes) -> GroupSecrets:
        """What a key verified against the group's check value opens (not remembered yet)."""
        if self._salt is None:
            self._salt = self._key_file.derive(b"roost ds group seal salt v1")
        # Both secrets: a database thief who is also a member (or holds an external-join link)
        # still needs the server's file; the operator, who holds the file, needs the group key.
        derived = HKDF(hashes.SHA256(), 64, salt=self._salt, info=b"roost ds group seal v1")
        okm = derived.derive(group_key + group_id)
        return GroupSecrets(group_key, Seal.with_key(okm[:32], STATE_SEAL_LABEL), okm[32:])

    def remember(self, group_id: bytes, secrets: GroupSecrets) -> None:
        self._known[group_id] = secrets
        self._known.move_to_end(group_id)
        if len(self._known) > self._size:
            self._known.popitem(last=False)

    def drop(self, group_id: bytes) -> None:
        self._known.pop(group_id, None)
