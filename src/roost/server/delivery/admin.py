"""Group administration (docs/api.md "Groups"): roles and settings (admins), a member's own
notification policy, and deleting a group with a signed ``group_deleted`` notice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import sqlalchemy as sa

from roost.protocol.base64url import b64u

from ..auth.service import Principal
from ..errors import Problem
from ..store import Database
from ..store.async_engine import AsyncConnection
from .external_sender import ExternalSender
from .fanout import Fanout
from .group_store import GroupStore, GroupView, leaf_of
from .rules import ADMIN, MEMBER
from .succession import has_live_admin
from .tables import ds_groups


class GroupAdmin:
    def __init__(
        self,
        db: Database,
        store: GroupStore,
        external_sender: ExternalSender,
        fanout: Fanout,
        now: Callable[[], int],
    ) -> None:
        self.db = db
        self.store = store
        self.external_sender = external_sender
        self.fanout = fanout
        self.now = now

    async def _require_admin(self, conn: AsyncConnection, group_id: bytes, p: Principal) -> None:
        await self.store.group(conn, group_id)
        members = await self.store.members(conn, group_id)
        if leaf_of(members, p.client_uuid, p.user_id) is None:
            raise Problem(403, "not_member", "not a member of this group")
        if await self.store.role_of(conn, group_id, p.user_id) != ADMIN:
            raise Problem(403, "role_required", "only admins may do this")

    async def set_role(self, p: Principal, group_id: bytes, user_id: str, role: str) -> None:
        async with self.db.transaction() as conn:
            await self.store.bump_rev(conn, group_id)  # lock the group row first
            await self._require_admin(conn, group_id, p)
            members = await self.store.members(conn, group_id)
            if not any(m.user_id == user_id and not m.gone for m in members):
                raise Problem(404, "user_not_member", f"{user_id} has no client in this group")
            after = await self.store.roles(conn, group_id)
            after.pop(user_id, None)
            if role != MEMBER:
                after[user_id] = role
            if not has_live_admin(members, after):
                raise Problem(
                    409, "last_admin", "the group's last admin cannot step down: promote another"
                )
            await self.store.set_role(conn, group_id, user_id, None if role == MEMBER else role)

    async def update_settings(
        self, p: Principal, group_id: bytes, external_join: bool
    ) -> GroupView:
        async with self.db.transaction() as conn:
            await self._require_admin(conn, group_id, p)
            await conn.execute(
                sa.update(ds_groups)
                .where(ds_groups.c.id == group_id)
                .values(external_join=external_join)
            )
            return await self.store.view(
                conn, await self.store.group(conn, group_id), (p.client_uuid, p.user_id)
            )

    async def set_policy(self, p: Principal, group_id: bytes, policy: str | None) -> None:
        async with self.db.transaction() as conn:
            await self.store.group(conn, group_id)
            await self.store.bump_rev(conn, group_id)  # lock the group row first
            mine = leaf_of(await self.store.members(conn, group_id), p.client_uuid, p.user_id)
            if mine is None:
                raise Problem(403, "not_member", "not a member of this group")
            await self.store.update_member(conn, group_id, replace(mine, policy=policy))

    async def delete_group(self, p: Principal, group_id: bytes) -> None:
        async with self.db.engine.connect() as conn:
            row = await self.store.group(conn, group_id)
        notice = await self.external_sender.signed_notice(
            row.cipher_suite,
            {
                "type": "group_deleted",
                "group_id": b64u(group_id),
                "user_id": p.user_id,
                "at": self.now(),
            },
        )
        async with self.db.transaction() as conn:
            await self._require_admin(conn, group_id, p)
            seq = await self.store.take_seq(conn, group_id)
            if seq is None:
                raise Problem(404, "group_not_found", "no such group")
            members = [
                m for m in await self.store.members(conn, group_id) if m.queue_id is not None
            ]
            await self.fanout.fanout(
                conn, group_id, seq, *self.store.notice_item(group_id, notice), members
            )
            await self.store.delete_group_rows(conn, group_id)
