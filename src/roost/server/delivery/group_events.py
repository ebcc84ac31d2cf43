"""What happens to members outside their groups — a client or account deleted, a display name
changed, a domain forgotten — reaching each group when the DS can open it (docs/privacy.md,
"The Delivery Service's state").

A keyed group's rows open only with its group key, which the DS holds in memory after a
member's request (``GroupStore.require_key``) and never stores. So the DS cannot look up which
groups a deleted client was in; instead it logs the event (``ds_group_events``, sealed) and
every group catches up from its ``events_seen``: at once if this process holds its key (or it
has none), else on the group's next request, before that request is served. An event is
deleted once every group has seen it.

Applying an event to a group: the named clients' leaves are marked gone (the server's Remove
proposals follow), a deleted user's or forgotten domain's roles are dropped, the members get a
signed notice (sealed under the group key, ``GroupStore.notice_item``), and a group left
without an admin gets its longest-standing member as one (``succession.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from roost.protocol.base64url import b64u

from ..seal import Seal
from ..seal_key import SealKeyFile
from ..store import Database
from ..store.async_engine import AsyncConnection
from .at_rest import SealBroken
from .external_sender import ExternalSender
from .fanout import Fanout
from .group_store import GroupStore, Member
from .succession import AdminSuccession
from .tables import ds_group_events, ds_groups

# Events applied to one group per transaction.
EVENTS_PER_PASS = 200

log = logging.getLogger("roost.server.delivery")


async def latest_event(conn: AsyncConnection) -> int:
    return int(await conn.scalar(sa.select(sa.func.max(ds_group_events.c.seq))) or 0)


@dataclass
class _Effects:
    """What a run of events does to one group."""

    gone: set[tuple[str, str]] = field(default_factory=set)  # (user id, client uuid)
    gone_domains: set[str] = field(default_factory=set)
    dropped_users: set[str] = field(default_factory=set)  # roles dropped
    notices: list[dict[str, object]] = field(default_factory=list)

    def named(self, m: Member) -> bool:
        return (m.user_id, m.client_uuid) in self.gone or (
            m.user_id.rpartition("@")[2] in self.gone_domains
        )


class GroupEvents:
    def __init__(
        self,
        db: Database,
        key_file: SealKeyFile,
        store: GroupStore,
        external_sender: ExternalSender,
        fanout: Fanout,
        succession: AdminSuccession,
        issue_removes: Callable[[bytes], Awaitable[int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self._seal = Seal(key_file, b"roost ds group events v1")
        self.store = store
        self.external_sender = external_sender
        self.fanout = fanout
        self.succession = succession
        self.issue_removes = issue_removes
        self.clock = clock
        self._applied_through = -1  # the log's last seq when catch_up_openable last ran

    # ---- the log ------------------------------------------------------------------------------

    async def log(self, conn: AsyncConnection, event: dict[str, object]) -> None:
        """Append an event, in the caller's transaction."""
        raw = json.dumps({**event, "at": int(self.clock())}, separators=(",", ":")).encode()
        await conn.execute(
            sa.insert(ds_group_events).values(
                sealed=self._seal.seal_bytes(raw), created_at=int(self.clock())
            )
        )

    async def prune(self) -> int:
        """Delete the events every group has seen."""
        async with self.db.transaction() as conn:
            floor = await conn.scalar(sa.select(sa.func.min(ds_groups.c.events_seen)))
            if floor is None:  # no groups: nobody needs them
                floor = await latest_event(conn)
            result = await conn.execute(
                sa.delete(ds_group_events).where(ds_group_events.c.seq <= floor)
            )
        return result.rowcount or 0

    # ---- catching up --------------------------------------------------------------------------

    async def catch_up_openable(self) -> None:
        """Every group behind the log that this process can open now (when the log grew since
        the last call: a key learnt since catches its group up by itself)."""
        async with self.db.engine.connect() as conn:
            latest = await latest_event(conn)
            if latest == self._applied_through:
                return
            behind = await self.store.openable_groups(conn, ds_groups.c.events_seen < latest)
        for group_id in behind:
            await self.catch_up(group_id)
        self._applied_through = latest

    async def catch_up(self, group_id: bytes) -> None:
        """Apply the events the group has not seen (the caller can open it)."""
        while await self._pass(group_id):
            pass

    async def _pass(self, group_id: bytes) -> bool:
        """One batch of events; True if more may follow."""
        async with self.db.engine.connect() as conn:
            row = await self.store.find_group(conn, group_id)
            if row is None:
                return False
            events = (
                await conn.execute(
                    sa.select(ds_group_events.c.seq, ds_group_events.c.sealed)
                    .where(ds_group_events.c.seq > row.events_seen)
                    .order_by(ds_group_events.c.seq)
                    .limit(EVENTS_PER_PASS)
                )
            ).all()
            if not events:
                return False
            try:
                members = await self.store.members(conn, group_id)
            except SealBroken:
                return False  # its key is not held here: its next request brings it
        effects = self._effects(group_id, [self._open(e.sealed) for e in events], members)
        # Signed before the write transaction (loading the key may write).
        key = await self.external_sender.key(row.cipher_suite)
        signed = [
            await self.external_sender.signed_notice(row.cipher_suite, n) for n in effects.notices
        ]
        marked: list[Member] = []
        async with self.db.transaction() as conn:
            await self.store.bump_rev(conn, group_id)  # locks the group row
            seen = await conn.scalar(
                sa.select(ds_groups.c.events_seen).where(ds_groups.c.id == group_id)
            )
            if seen != row.events_seen:
                return seen is not None  # another task or process applied them
            if effects.gone or effects.gone_domains:
                marked = await self.store.mark_gone(conn, group_id, effects.named)
            for notice in signed:
                await notice_in(conn, self.store, self.fanout, group_id, notice)
            for user_id in sorted(effects.dropped_users):
                await self.store.set_role(conn, group_id, user_id, None)
            if marked or effects.dropped_users:
                # A group whose admins had no other live leaf gets its longest-standing member;
                # a user whose roles went must not become the successor by a leaf not named.
                members = await self.store.members(conn, group_id)
                await self.succession.keep_admin_in(
                    conn,
                    group_id,
                    key,
                    [m for m in members if m.user_id not in effects.dropped_users],
                    await self.store.roles(conn, group_id),
                )
            await conn.execute(
                sa.update(ds_groups)
                .where(ds_groups.c.id == group_id)
                .values(events_seen=events[-1].seq)
            )
        if marked:
            await self.issue_removes(group_id)
        return len(events) == EVENTS_PER_PASS

    def _open(self, sealed: bytes) -> dict[str, object]:
        raw = self._seal.open_bytes(sealed)
        return {} if raw is None else json.loads(raw)  # another key file's: nothing to apply

    def _effects(
        self, group_id: bytes, events: list[dict[str, object]], members: list[Member]
    ) -> _Effects:
        out = _Effects()
        for ev in events:
            kind = ev.get("type")
            at = ev.get("at", int(self.clock()))  # when it happened, not when applied
            if kind in ("clients_gone", "user_deleted"):
                # Matched on user id AND client uuid: an event from another domain names only
                # that domain's users, so it cannot reach a third domain's client by its uuid.
                for client_id in ev.get("client_ids", []):  # type: ignore[attr-defined]
                    user_id, _, client_uuid = str(client_id).rpartition("/")
                    out.gone.add((user_id, client_uuid))
            user_id = str(ev.get("user_id", ""))
            here = any(m.user_id == user_id for m in members)
            if kind == "user_deleted" and here:
                out.dropped_users.add(user_id)
                out.notices.append(
                    {
                        "type": "user_deleted",
                        "user_id": user_id,
                        "client_ids": ev.get("client_ids", []),
                        "group_id": b64u(group_id),
                        "at": at,
                    }
                )
            elif kind == "display_name_changed" and here:
                out.notices.append(
                    {
                        "type": "display_name_changed",
                        "user_id": user_id,
                        "display_name": ev.get("display_name"),
                        "group_id": b64u(group_id),
                        "at": at,
                    }
                )
            elif kind == "domain_forgotten":
                domain = str(ev.get("domain", ""))
                users = sorted(
                    {
                        m.user_id
                        for m in members
                        if not m.gone and m.user_id.rpartition("@")[2] == domain
                    }
                )
                if users:
                    out.gone_domains.add(domain)
                    out.dropped_users.update(users)
                    out.notices.append(
                        {
                            "type": "domain_forgotten",
                            "domain": domain,
                            "user_ids": users,
                            "group_id": b64u(group_id),
                            "at": at,
                        }
                    )
        return out


async def notice_in(
    conn: AsyncConnection,
    store: GroupStore,
    fanout: Fanout,
    group_id: bytes,
    signed: bytes,
) -> bool:
    """A signed server notice to the group's members that are not gone, as the group's next
    item, in the caller's transaction; False if the group is gone."""
    seq = await store.take_seq(conn, group_id)
    if seq is None:
        return False
    members = await store.members(conn, group_id)
    await fanout.fanout(conn, group_id, seq, *store.notice_item(group_id, signed), members)
    return True
