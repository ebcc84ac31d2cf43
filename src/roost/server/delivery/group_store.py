"""Group rows, members and roles: reads, the consistent snapshot a commit or proposal is judged
on, and the ``(group, rev)`` member cache of the send path.

Every change to a group's members or roles bumps its ``rev`` in the same transaction (and
locks the group row first: the lock order everywhere is the group row, then member rows, then
queue counters), so ``(group, rev)`` names one immutable member list.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.protocol.base64url import b64u

from ..errors import Problem
from ..store import Database
from .tables import ds_groups, ds_held, ds_members, ds_roles, ds_sends

MEMBER_CACHE_SIZE = 10_000
SNAPSHOT_RETRIES = 8
_GROUP_ID_RE = re.compile(rb"^[A-Za-z0-9_-]{22}@([a-z0-9.-]{1,253}(?::[0-9]{1,5})?)$")


@dataclass(frozen=True, slots=True)
class Member:
    leaf_index: int
    client_uuid: str
    user_id: str
    queue_id: bytes | None
    policy: str | None
    gone: bool
    queue_domain: str | None = None  # None: the queue is on this server's QS
    joined_seq: int = 0  # group_seq of the commit that added the leaf (0: the creator)


@dataclass(frozen=True, slots=True)
class GroupView:
    group_id: bytes
    cipher_suite: int
    epoch: int
    group_seq: int
    external_join: bool
    roles: dict[str, str]
    my_leaf: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "group_id": b64u(self.group_id),
            "cipher_suite": self.cipher_suite,
            "epoch": self.epoch,
            "group_seq": self.group_seq,
            "external_join": self.external_join,
            "roles": self.roles,
            "my_leaf": self.my_leaf,
        }


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """A group row with its members and roles, all as of the same ``rev``."""

    row: sa.Row
    members: list[Member]
    roles: dict[str, str]

    def by_leaf(self) -> dict[int, Member]:
        return {m.leaf_index: m for m in self.members}


def leaf_of(members: Iterable[Member], client_uuid: str) -> Member | None:
    """The calling client's live leaf, if it holds one."""
    for m in members:
        if m.client_uuid == client_uuid and not m.gone:
            return m
    return None


def check_group_id(group_id: bytes, home_domain: str) -> None:
    """A group id is 22 characters of base64url, "@" and this server's domain."""
    m = _GROUP_ID_RE.match(group_id)
    if m is None or m.group(1).decode() != home_domain:
        raise Problem(
            422,
            "invalid_group_id",
            f"a group id is '<22 chars of base64url>@{home_domain}' (ASCII)",
        )


class GroupStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._member_cache: OrderedDict[bytes, tuple[int, list[Member]]] = OrderedDict()

    async def group(self, conn: AsyncConnection, group_id: bytes) -> sa.Row:
        row = (await conn.execute(sa.select(ds_groups).where(ds_groups.c.id == group_id))).first()
        if row is None:
            raise Problem(404, "group_not_found", "no such group")
        return row

    async def find_group(self, conn: AsyncConnection, group_id: bytes) -> sa.Row | None:
        return (await conn.execute(sa.select(ds_groups).where(ds_groups.c.id == group_id))).first()

    async def members(self, conn: AsyncConnection, group_id: bytes) -> list[Member]:
        rows = await conn.execute(
            sa.select(
                ds_members.c.leaf_index,
                ds_members.c.client_uuid,
                ds_members.c.user_id,
                ds_members.c.queue_id,
                ds_members.c.policy,
                ds_members.c.gone,
                ds_members.c.queue_domain,
                ds_members.c.joined_seq,
            ).where(ds_members.c.group_id == group_id)
        )
        return [Member(*r) for r in rows]

    async def roles(self, conn: AsyncConnection, group_id: bytes) -> dict[str, str]:
        rows = await conn.execute(
            sa.select(ds_roles.c.user_id, ds_roles.c.role).where(ds_roles.c.group_id == group_id)
        )
        return {r.user_id: r.role for r in rows}

    async def role_of(self, conn: AsyncConnection, group_id: bytes, user_id: str) -> str | None:
        return (
            await conn.execute(
                sa.select(ds_roles.c.role).where(
                    ds_roles.c.group_id == group_id, ds_roles.c.user_id == user_id
                )
            )
        ).scalar_one_or_none()

    async def snapshot(self, group_id: bytes) -> GroupSnapshot:
        """The group row with its members and roles as of the same ``rev``. Read without a lock,
        so a commit landing between the reads would pair one epoch's row with the next epoch's
        members (a valid commit then refused as a role violation instead of a conflict). Every
        change to members or roles bumps ``rev`` in its transaction: re-read until it holds."""
        async with self.db.engine.connect() as conn:
            for _ in range(SNAPSHOT_RETRIES):
                row = await self.group(conn, group_id)
                members = await self.members(conn, group_id)
                roles = await self.roles(conn, group_id)
                rev = await conn.scalar(
                    sa.select(ds_groups.c.rev).where(ds_groups.c.id == group_id)
                )
                if rev == row.rev:
                    self._remember(group_id, row.rev, members)
                    return GroupSnapshot(row, members, roles)
        raise Problem(409, "conflict", "the group changed concurrently; retry")

    async def members_at(self, conn: AsyncConnection, group_id: bytes, rev: int) -> list[Member]:
        """The member list at ``rev`` (cached: ``(group, rev)`` names one immutable list, safe
        across processes too)."""
        hit = self._member_cache.get(group_id)
        if hit is not None and hit[0] == rev:
            self._member_cache.move_to_end(group_id)
            return hit[1]
        members = await self.members(conn, group_id)
        self._remember(group_id, rev, members)
        return members

    def cached_members(self, group_id: bytes) -> list[Member] | None:
        """The last member list seen of the group (may be stale)."""
        hit = self._member_cache.get(group_id)
        return hit[1] if hit is not None else None

    def _remember(self, group_id: bytes, rev: int, members: list[Member]) -> None:
        self._member_cache[group_id] = (rev, members)
        if len(self._member_cache) > MEMBER_CACHE_SIZE:
            self._member_cache.popitem(last=False)

    async def view(self, conn: AsyncConnection, row: sa.Row, client_uuid: str | None) -> GroupView:
        members = await self.members(conn, row.id)
        mine = leaf_of(members, client_uuid) if client_uuid else None
        return GroupView(
            row.id,
            row.cipher_suite,
            row.epoch,
            row.last_seq,
            row.external_join,
            await self.roles(conn, row.id),
            mine.leaf_index if mine else None,
        )

    async def bump_rev(self, conn: AsyncConnection, group_id: bytes) -> None:
        """Mark a change of members or roles (and lock the group row: take this first)."""
        await conn.execute(
            sa.update(ds_groups).where(ds_groups.c.id == group_id).values(rev=ds_groups.c.rev + 1)
        )

    async def mark_gone(self, conn: AsyncConnection, match: sa.ColumnElement[bool]) -> set[bytes]:
        """Mark the member rows ``match`` selects gone, in the caller's transaction: nothing more
        is delivered to them (their held items go too) and the server's Remove proposals for
        them follow (``AccountEvents.issue_removes``). The groups touched."""
        rows = list(
            await conn.execute(
                sa.select(ds_members.c.group_id, ds_members.c.leaf_index).where(match)
            )
        )
        for gid in sorted({r.group_id for r in rows}):  # group rows first, in order
            await self.bump_rev(conn, gid)
        await conn.execute(sa.update(ds_members).where(match).values(gone=True, queue_id=None))
        for r in rows:
            await conn.execute(
                sa.delete(ds_held).where(
                    ds_held.c.group_id == r.group_id, ds_held.c.leaf_index == r.leaf_index
                )
            )
        return {r.group_id for r in rows}

    async def mark_leaves_gone(
        self, conn: AsyncConnection, group_id: bytes, leaves: list[int]
    ) -> set[bytes]:
        """``mark_gone`` for some leaves of one group."""
        return await self.mark_gone(
            conn, sa.and_(ds_members.c.group_id == group_id, ds_members.c.leaf_index.in_(leaves))
        )

    async def take_seq(self, conn: AsyncConnection, group_id: bytes) -> int | None:
        """The group's next ``group_seq`` (locks the row); None if there is no such group."""
        return (
            await conn.execute(
                sa.update(ds_groups)
                .where(ds_groups.c.id == group_id)
                .values(last_seq=ds_groups.c.last_seq + 1)
                .returning(ds_groups.c.last_seq)
            )
        ).scalar_one_or_none()

    async def client_uuid_taken_in(
        self, conn: AsyncConnection, client_uuid: str, user_id: str
    ) -> bool:
        """Whether another user's member leaf uses this client uuid."""
        taken = await conn.execute(
            sa.select(ds_members.c.client_uuid)
            .where(ds_members.c.client_uuid == client_uuid, ds_members.c.user_id != user_id)
            .limit(1)
        )
        return taken.first() is not None

    async def groups_of_client(self, conn: AsyncConnection, client_uuid: str) -> list[bytes]:
        """The groups the client joined: a leaf not joined yet (no queue registered, e.g. under
        a connection request not accepted yet) is not listed."""
        return [
            r.group_id
            for r in await conn.execute(
                sa.select(ds_members.c.group_id)
                .where(
                    ds_members.c.client_uuid == client_uuid,
                    ds_members.c.gone.is_(False),
                    ds_members.c.queue_id.is_not(None),
                )
                .order_by(ds_members.c.group_id)
            )
        ]

    async def delete_group_rows(self, conn: AsyncConnection, group_id: bytes) -> None:
        # Explicit deletes: SQLite does not enforce ON DELETE CASCADE without a pragma.
        for t in (ds_members, ds_roles, ds_held, ds_sends):
            await conn.execute(sa.delete(t).where(t.c.group_id == group_id))
        await conn.execute(sa.delete(ds_groups).where(ds_groups.c.id == group_id))
