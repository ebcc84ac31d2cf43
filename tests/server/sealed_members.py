"""Reading the DS's sealed member rows from a test, as the DS does while it serves a request:
with the server's seal key file and the group keys the members hold."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from roost.server.delivery.at_rest import AtRest, MemberIds, SealBroken
from roost.server.delivery.group_keyring import GroupKeyring
from roost.server.seal_key import SealKeyFile


def member_ids(
    key_path: Path, group_id: bytes, leaf_index: int, sealed: bytes, group_keys: Iterable[bytes]
) -> MemberIds:
    """The row opened under whichever of ``group_keys`` is the group's (or the file alone, for
    a group without a key)."""
    key_file = SealKeyFile(key_path)
    for group_key in group_keys:
        keyring = GroupKeyring(key_file)
        keyring.remember(group_id, keyring.derive(group_id, group_key))
        try:
            return AtRest(key_file, keyring).open_member(group_id, leaf_index, sealed)
        except SealBroken:
            continue
    return AtRest(key_file).open_member(group_id, leaf_index, sealed)
