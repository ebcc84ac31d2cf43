"""Group rows, members and roles: reads, the consistent snapshot a commit or proposal is judged
on, and the ``(group, rev)`` member cache of the send path.

Every change to a group's members or roles bumps its ``rev`` in the same transaction (and
locks the group row first: the lock order everywhere is the group row, then member rows, then
queue counters), so ``(group, rev)`` names one immutable member list.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

import sqlalchemy as sa

from roost.protocol.base64url import b64u
from roost.protocol.queue_item import ITEM_SEALED_NOTICE, ITEM_SERVER_NOTICE
from roost.protocol.sealed_notice import seal_notice

from ..errors import Problem
from ..store import Database
from ..store.async_engine import AsyncConnection
from .at_rest import AtRest, MemberIds, SealBroken
from .group_key import key_refusal
from .group_keyring import GroupSecrets
from .tables import ds_groups, ds_held, ds_members, ds_roles, ds_sends

MEMBER_CACHE_SIZE = 10_000
SNAPSHOT_RETRIES = 8
# What a member row is read as (``GroupStore._member``'s arguments, in order).
_MEMBER_COLUMNS = (
    ds_members.c.group_id,
    ds_members.c.leaf_index,
    ds_members.c.sealed,
    ds_members.c.gone,
    ds_members.c.joined_seq,
)
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


def leaf_of(members: Iterable[Member], client_uuid: str, user_id: str) -> Member | None:
    """The calling client's live leaf, if it holds one. A client is its user's and its uuid
    together: another server's client may not act on a leaf of another user's client that
    happens to carry the same uuid."""
    for m in members:
        if m.client_uuid == client_uuid and m.user_id == user_id and not m.gone:
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
    def __init__(self, db: Database, at_rest: AtRest) -> None:
        self.db = db
        self.at_rest = at_rest
        # group -> (rev, members, group key check value)
        self._member_cache: OrderedDict[bytes, tuple[int, list[Member], bytes | None]] = (
            OrderedDict()
        )
        # Called once this process holds a group's key (the group's pending events, which it
        # could not apply before: group_events.py). Set by the service.
        self.on_key_learned: Callable[[bytes], Awaitable[None]] | None = None

    async def group(self, conn: AsyncConnection, group_id: bytes) -> sa.Row:
        row = (await conn.execute(sa.select(ds_groups).where(ds_groups.c.id == group_id))).first()
        if row is None:
            raise Problem(404, "group_not_found", "no such group")
        return row

    async def find_group(self, conn: AsyncConnection, group_id: bytes) -> sa.Row | None:
        return (await conn.execute(sa.select(ds_groups).where(ds_groups.c.id == group_id))).first()

    async def members(self, conn: AsyncConnection, group_id: bytes) -> list[Member]:
        rows = await conn.execute(
            sa.select(*_MEMBER_COLUMNS).where(ds_members.c.group_id == group_id)
        )
        return [self._member(*r) for r in rows]

    def _member(
        self, group_id: bytes, leaf_index: int, sealed: bytes, gone: bool, joined_seq: int
    ) -> Member:
        ids = self.at_rest.open_member(group_id, leaf_index, sealed)
        return Member(
            leaf_index,
            ids.client_uuid,
            ids.user_id,
            ids.queue_id,
            ids.policy,
            gone,
            ids.queue_domain,
            joined_seq,
        )

    def member_row(self, group_id: bytes, m: Member) -> dict[str, object]:
        """The stored row of ``m`` (for inserts)."""
        return {
            "group_id": group_id,
            "leaf_index": m.leaf_index,
            "sealed": self._seal(group_id, m),
            "gone": m.gone,
            "joined_seq": m.joined_seq,
        }

    def _seal(self, group_id: bytes, m: Member) -> bytes:
        ids = MemberIds(m.client_uuid, m.user_id, m.queue_id, m.queue_domain, m.policy)
        return self.at_rest.seal_member(group_id, m.leaf_index, ids)

    async def update_member(self, conn: AsyncConnection, group_id: bytes, m: Member) -> None:
        """Store ``m``'s queue reference and policy (its leaf row exists)."""
        await conn.execute(
            sa.update(ds_members)
            .where(ds_members.c.group_id == group_id, ds_members.c.leaf_index == m.leaf_index)
            .values(sealed=self._seal(group_id, m))
        )

    async def roles(self, conn: AsyncConnection, group_id: bytes) -> dict[str, str]:
        rows = await conn.execute(
            sa.select(ds_roles.c.sealed_user, ds_roles.c.role).where(
                ds_roles.c.group_id == group_id
            )
        )
        return {self.at_rest.open_user(group_id, r.sealed_user): r.role for r in rows}

    async def role_of(self, conn: AsyncConnection, group_id: bytes, user_id: str) -> str | None:
        return (
            await conn.execute(
                sa.select(ds_roles.c.role).where(
                    ds_roles.c.group_id == group_id,
                    ds_roles.c.user_ref == self.at_rest.user_ref(group_id, user_id),
                )
            )
        ).scalar_one_or_none()

    async def set_role(
        self, conn: AsyncConnection, group_id: bytes, user_id: str, role: str | None
    ) -> None:
        """Give ``user_id`` ``role`` in the group (None: no role, a plain member)."""
        ref = self.at_rest.user_ref(group_id, user_id)
        await conn.execute(
            sa.delete(ds_roles).where(ds_roles.c.group_id == group_id, ds_roles.c.user_ref == ref)
        )
        if role is not None:
            await conn.execute(
                sa.insert(ds_roles).values(
                    group_id=group_id,
                    user_ref=ref,
                    sealed_user=self.at_rest.seal_user(group_id, user_id),
                    role=role,
                )
            )

    def state_of(self, row: sa.Row) -> bytes:
        """The group's observer state (``ds_groups.state``, sealed at rest)."""
        return self.at_rest.open_state(row.id, row.state)

    def group_info_of(self, row: sa.Row) -> bytes:
        return self.at_rest.open_group_info(row.id, row.group_info)

    def sealed_state(self, group_id: bytes, state: bytes, group_info: bytes) -> dict[str, bytes]:
        """The ``ds_groups`` values that store ``state`` and ``group_info``."""
        return {
            "state": self.at_rest.seal_state(group_id, state),
            "group_info": self.at_rest.seal_group_info(group_id, group_info),
        }

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
                    self._remember(group_id, row.rev, members, row.key_check)
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
        check = await conn.scalar(
            sa.select(ds_groups.c.key_check).where(ds_groups.c.id == group_id)
        )
        self._remember(group_id, rev, members, check)
        return members

    def cached_members(self, group_id: bytes) -> list[Member] | None:
        """The last member list seen of the group (may be stale)."""
        hit = self._member_cache.get(group_id)
        return hit[1] if hit is not None else None

    def _remember(
        self, group_id: bytes, rev: int, members: list[Member], check: bytes | None
    ) -> None:
        self._member_cache[group_id] = (rev, members, check)
        if len(self._member_cache) > MEMBER_CACHE_SIZE:
            self._member_cache.popitem(last=False)

    async def require_key(self, group_id: bytes, group_key: bytes | None) -> None:
        """404 for no such group; 403 unless ``group_key`` is the group's (group_key.py). A key
        that matches is held in memory from then on (the group's rows open with it, at_rest.py)."""
        keyring = self.at_rest.keyring
        if keyring.holds(group_id, group_key):
            return
        hit = self._member_cache.get(group_id)
        if hit is not None and hit[2] is None:
            return  # a group made without a key (a group's check value never changes)
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(ds_groups.c.key_check, ds_groups.c.key_sealed).where(
                        ds_groups.c.id == group_id
                    )
                )
            ).first()
        if row is None:
            raise Problem(404, "group_not_found", "no such group")
        refusal = key_refusal(row.key_check, group_key)
        if refusal is not None:
            raise refusal
        if group_key is None:
            return  # a group made without a key
        secrets_ = keyring.derive(group_id, group_key)
        if not row.key_sealed:
            await self._reseal(group_id, secrets_)
        keyring.remember(group_id, secrets_)
        if self.on_key_learned is not None:
            await self.on_key_learned(group_id)

    async def _reseal(self, group_id: bytes, secrets_: GroupSecrets) -> None:
        """A keyed group stored before the DS held its key (sealed under the file's keys alone):
        seal its rows under the group key, once."""
        async with self.db.transaction() as conn:
            await self.bump_rev(conn, group_id)  # locks the group row
            row = await self.find_group(conn, group_id)
            if row is None or row.key_sealed:
                return  # deleted, or another process was first
            members = await self.members(conn, group_id)
            roles = await self.roles(conn, group_id)
            state, group_info = self.state_of(row), self.group_info_of(row)
            with self.at_rest.sealing_under(group_id, secrets_):
                for m in members:
                    await self.update_member(conn, group_id, m)
                await conn.execute(sa.delete(ds_roles).where(ds_roles.c.group_id == group_id))
                for user_id, role in roles.items():
                    await self.set_role(conn, group_id, user_id, role)
                await conn.execute(
                    sa.update(ds_groups)
                    .where(ds_groups.c.id == group_id)
                    .values(key_sealed=True, **self.sealed_state(group_id, state, group_info))
                )

    def notice_item(self, group_id: bytes, signed: bytes) -> tuple[int, bytes]:
        """A signed server notice as the queue item the group's members get: sealed under the
        group key when the DS holds it (sealed_notice.py), else as it is."""
        held = self.at_rest.held(group_id)
        if held is None:
            return ITEM_SERVER_NOTICE, signed
        return ITEM_SEALED_NOTICE, seal_notice(held.group_key, group_id, signed)

    async def openable_groups(
        self, conn: AsyncConnection, where: sa.ColumnElement[bool]
    ) -> list[bytes]:
        """The groups ``where`` selects whose rows this process can open now: made without a
        key, not resealed under theirs yet, or with their key held."""
        rows = await conn.execute(
            sa.select(ds_groups.c.id, ds_groups.c.key_check, ds_groups.c.key_sealed).where(where)
        )
        return [
            r.id
            for r in rows
            if r.key_check is None or not r.key_sealed or self.at_rest.held(r.id) is not None
        ]

    async def view(
        self, conn: AsyncConnection, row: sa.Row, client: tuple[str, str] | None
    ) -> GroupView:
        """``client``: the caller's (client uuid, user id), whose leaf the view names."""
        members = await self.members(conn, row.id)
        mine = leaf_of(members, *client) if client else None
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

    async def unkeyed_groups_with(
        self, conn: AsyncConnection, which: Callable[[Member], bool]
    ) -> list[bytes]:
        """The groups made without a group key with a leaf (gone or not) that ``which``
        selects. No column names a leaf's client or user, so every leaf is opened: a scan, for
        rare requests. Keyed groups open only with their key: nothing can list them."""
        rows = await conn.execute(
            sa.select(*_MEMBER_COLUMNS)
            .join(ds_groups, ds_groups.c.id == ds_members.c.group_id)
            .where(ds_groups.c.key_check.is_(None))
        )
        found = set()
        for r in rows:
            try:
                if which(self._member(*r)):
                    found.add(r.group_id)
            except SealBroken:  # another key file's seal (a restored copy): not ours to list
                continue
        return sorted(found)

    async def mark_gone(
        self, conn: AsyncConnection, group_id: bytes, which: Callable[[Member], bool]
    ) -> list[Member]:
        """Mark the group's live leaves that ``which`` selects gone, in the caller's
        transaction (the group row locked first): nothing more is delivered to them (their
        held items go too) and the server's Remove proposals for them follow
        (``AccountEvents.issue_removes``). The leaves marked."""
        await self.bump_rev(conn, group_id)
        chosen = [m for m in await self.members(conn, group_id) if not m.gone and which(m)]
        await self._mark_gone(conn, group_id, chosen)
        return chosen

    async def mark_leaves_gone(
        self, conn: AsyncConnection, group_id: bytes, leaves: list[int]
    ) -> set[bytes]:
        """``mark_gone`` for some leaves of one group (locks the group row first)."""
        await self.bump_rev(conn, group_id)
        chosen = [m for m in await self.members(conn, group_id) if m.leaf_index in leaves]
        await self._mark_gone(conn, group_id, chosen)
        return {group_id} if chosen else set()

    async def _mark_gone(
        self, conn: AsyncConnection, group_id: bytes, leaves: list[Member]
    ) -> None:
        # The leaf keeps who it was (for the Remove proposal); its queue reference goes.
        for m in leaves:
            await conn.execute(
                sa.update(ds_members)
                .where(ds_members.c.group_id == group_id, ds_members.c.leaf_index == m.leaf_index)
                .values(gone=True, sealed=self._seal(group_id, replace(m, queue_id=None)))
            )
        if leaves:
            await conn.execute(
                sa.delete(ds_held).where(
                    ds_held.c.group_id == group_id,
                    ds_held.c.leaf_index.in_([m.leaf_index for m in leaves]),
                )
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

    async def groups_of_client(
        self, conn: AsyncConnection, client_uuid: str, user_id: str
    ) -> list[bytes]:
        """The groups made without a key the client joined: a leaf not joined yet (no queue
        registered, e.g. under a connection request not accepted yet) is not listed (a scan,
        see ``unkeyed_groups_with``)."""
        return await self.unkeyed_groups_with(
            conn,
            lambda m: (
                m.client_uuid == client_uuid
                and m.user_id == user_id
                and not m.gone
                and m.queue_id is not None
            ),
        )

    async def delete_group_rows(self, conn: AsyncConnection, group_id: bytes) -> None:
        # Explicit deletes: SQLite does not enforce ON DELETE CASCADE without a pragma.
        for t in (ds_members, ds_roles, ds_held, ds_sends):
            await conn.execute(sa.delete(t).where(t.c.group_id == group_id))
        await conn.execute(sa.delete(ds_groups).where(ds_groups.c.id == group_id))
