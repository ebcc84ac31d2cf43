"""Admin succession (docs/api.md "Roles, policy, settings"): a group always has an admin.

When a change would leave no user holding a live leaf with the ``admin`` role — the last admin
left or was removed by a commit, or their clients or account were deleted — the DS promotes
the longest-standing member: the live leaf with the lowest ``joined_seq`` (the group_seq of the
commit that added it), ties to the lowest leaf index; that leaf's user becomes admin. It happens
in the transaction of the change, and every member gets a signed ``admin_promoted`` notice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.protocol.base64url import b64u
from roost.protocol.signed_notice import sign_notice

from ..store.async_engine import AsyncConnection
from .fanout import Fanout
from .group_store import GroupStore, Member
from .keys import ServerKey
from .rules import ADMIN


def has_live_admin(members: Iterable[Member], roles: dict[str, str]) -> bool:
    """Whether some user with a live (not deleted) leaf holds the admin role."""
    return any(not m.gone and roles.get(m.user_id) == ADMIN for m in members)


def successor(members: Iterable[Member], roles: dict[str, str]) -> str | None:
    """The user to promote: None while a live member is admin, or when no live member is left."""
    live = [m for m in members if not m.gone]
    if not live or has_live_admin(live, roles):
        return None
    return min(live, key=lambda m: (m.joined_seq, m.leaf_index)).user_id


class AdminSuccession:
    def __init__(self, store: GroupStore, fanout: Fanout, now: Callable[[], int]) -> None:
        self.store = store
        self.fanout = fanout
        self.now = now

    async def keep_admin_in(
        self,
        conn: AsyncConnection,
        group_id: bytes,
        key: ServerKey,
        members: list[Member],
        roles: dict[str, str],
    ) -> str | None:
        """Inside the caller's transaction (the group row locked), with the group's members and
        roles as they stand after the change: promote the successor if the group has no admin
        left, and fan the signed notice out. ``key`` is the homeserver's key of the group's
        suite, loaded before the transaction. Returns the promoted user, if any."""
        user_id = successor(members, roles)
        if user_id is None:
            return None
        await self.store.bump_rev(conn, group_id)  # roles change: a new snapshot
        await self.store.set_role(conn, group_id, user_id, ADMIN)
        seq = await self.store.take_seq(conn, group_id)
        if seq is None:  # the group is gone
            return None
        notice = sign_notice(
            get_cipher_suite(key.cipher_suite),
            key.private_key,
            {
                "type": "admin_promoted",
                "group_id": b64u(group_id),
                "user_id": user_id,
                "at": self.now(),
            },
        )
        await self.fanout.fanout(
            conn, group_id, seq, *self.store.notice_item(group_id, notice), members
        )
        return user_id
