"""The account-events consumer: when the AS deletes a client or user (here, or on a member's
own server), mark its leaves gone and issue the server's Remove proposals; send signed notices
of deleted users and changed display names; prune old idempotency records. Members of domains
the operator forgot take the same path (``forgotten_domains.py``, run from this loop).

One background task, woken by the AS's deletion hooks (and after a commit that leaves gone
leaves behind: their Removes are issued again for the new epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.protocol.base64url import b64u
from roost.protocol.queue_item import ITEM_SERVER_NOTICE

from ..auth.service import AuthService
from ..store import Database
from .external_sender import ExternalSender
from .fanout import Fanout
from .group_store import GroupStore, Member
from .send_writer import SEND_ID_RETENTION
from .succession import AdminSuccession
from .tables import ds_groups, ds_members, ds_sends

# pg_advisory_lock key of the account-events consumer (any fixed 64-bit value of our own).
ACCOUNT_EVENTS_LOCK_KEY = 0x526F6F7374414501
PRUNE_INTERVAL = 300.0

log = logging.getLogger("roost.server.delivery")


class AccountEvents:
    def __init__(
        self,
        db: Database,
        auth: AuthService,
        store: GroupStore,
        external_sender: ExternalSender,
        fanout: Fanout,
        succession: AdminSuccession,
        issue_removes: Callable[[bytes], Awaitable[int]],
        clock: Callable[[], float] = time.time,
        sweep_forgotten: Callable[[], Awaitable[set[bytes]]] | None = None,
    ) -> None:
        self.db = db
        self.auth = auth
        self.store = store
        self.external_sender = external_sender
        self.fanout = fanout
        self.succession = succession
        self.issue_removes = issue_removes
        self.clock = clock
        # Members of domains the operator forgot leave too (forgotten_domains.py).
        self.sweep_forgotten = sweep_forgotten
        self._wake = asyncio.Event()
        # One consumer of the account-event outbox at a time (the background task, tests).
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_prune = 0.0

    def now(self) -> int:
        return int(self.clock())

    def wake(self) -> None:
        self._wake.set()

    async def _hook_client_removed(self, conn: AsyncConnection, client_uuid: str) -> None:
        self.wake()

    async def _hook_user_deleted(
        self, conn: AsyncConnection, user_uuid: str, client_uuids: list[str]
    ) -> None:
        self.wake()

    def install_hooks(self) -> None:
        self.auth.on_client_removed.append(self._hook_client_removed)
        self.auth.on_user_deleted.append(self._hook_user_deleted)

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            # A cancellation landing inside a database call can surface as another error
            # (e.g. PendingRollbackError); the loop exits on the flag either way.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=5.0)
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            self._wake.clear()
            if self._stopping:
                return
            try:
                # Let the transaction that woke us commit first.
                await asyncio.sleep(0.02)
                await self.process()
                if self.clock() - self._last_prune >= PRUNE_INTERVAL:
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping:
                    return
                log.exception("processing account events failed")

    async def prune(self) -> int:
        """Delete idempotency records older than the retention (they only answer retries)."""
        self._last_prune = self.clock()
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(ds_sends).where(ds_sends.c.created_at < self.now() - SEND_ID_RETENTION)
            )
        return result.rowcount or 0

    async def process(self) -> int:
        """Consume the AS outbox: mark deleted clients gone, issue Remove proposals, notices.

        One consumer at a time: a lock within the process, and on PostgreSQL an advisory lock
        across the processes sharing the database (a process that does not get it leaves the
        events to the one that holds it), so no event yields two Removes or two notices."""
        async with self._lock, self._consumer() as mine:
            return await self._process() if mine else 0

    @contextlib.asynccontextmanager
    async def _consumer(self) -> AsyncIterator[bool]:
        if self.db.is_sqlite:  # SQLite serves one process (docs/operations.md)
            yield True
            return
        # Transaction-scoped: whatever ends this block (even a cancellation) ends the
        # transaction, and with it the lock.
        async with self.db.engine.connect() as conn:
            got = (
                await conn.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ACCOUNT_EVENTS_LOCK_KEY}
                )
            ).scalar()
            yield bool(got)

    async def _process(self) -> int:
        done = 0
        while True:
            events = await self.auth.pending_account_events()
            if not events:
                break
            touched: set[bytes] = set()
            for ev in events:
                payload = json.loads(ev.payload)
                if ev.event_type == "client_removed":
                    touched |= await self._clients_gone([payload["client_id"]])
                elif ev.event_type == "user_deleted":
                    touched |= await self._clients_gone(payload.get("client_ids", []))
                    await self._user_notice(
                        ev.user_id,
                        {
                            "type": "user_deleted",
                            "user_id": ev.user_id,
                            "client_ids": payload.get("client_ids", []),
                        },
                        drop_roles=True,
                    )
                elif ev.event_type == "display_name_changed":
                    await self._user_notice(
                        ev.user_id,
                        {
                            "type": "display_name_changed",
                            "user_id": ev.user_id,
                            "display_name": payload.get("display_name"),
                        },
                    )
            await self.auth.drop_account_events([ev.id for ev in events])
            done += len(events)
            for gid in touched:
                await self.issue_removes(gid)
        if self.sweep_forgotten is not None:
            await self.sweep_forgotten()  # their Removes are issued just below
        # Groups whose outstanding Removes were dropped by a commit get them again.
        async with self.db.engine.connect() as conn:
            pending = [
                r.group_id
                for r in await conn.execute(
                    sa.select(ds_members.c.group_id).where(ds_members.c.gone.is_(True)).distinct()
                )
            ]
        for gid in pending:
            await self.issue_removes(gid)
        return done

    async def _clients_gone(self, client_ids: list[str]) -> set[bytes]:
        # Matched on user id AND client uuid: an event from another domain names only that
        # domain's users, so it cannot reach a member of a third domain by its client uuid.
        owners = {(user_id, uuid) for user_id, _, uuid in (c.rpartition("/") for c in client_ids)}
        if not owners:
            return set()

        def named(m: Member) -> bool:
            return (m.user_id, m.client_uuid) in owners

        async with self.db.engine.connect() as conn:
            candidates = await self.store.groups_with(conn, lambda m: not m.gone and named(m))
            # The homeserver's keys for their suites, loaded before the write transaction
            # (loading one may write).
            suites = {(await self.store.group(conn, gid)).cipher_suite for gid in candidates}
        keys = {suite: await self.external_sender.key(suite) for suite in sorted(suites)}
        gids: set[bytes] = set()
        async with self.db.transaction() as conn:
            for gid in candidates:  # group rows first, in order
                if not await self.store.mark_gone(conn, gid, named):
                    continue
                gids.add(gid)
                # A group whose admins had no other live leaf gets its longest-standing member.
                row = await self.store.group(conn, gid)
                await self.succession.keep_admin_in(
                    conn,
                    gid,
                    keys[row.cipher_suite],
                    await self.store.members(conn, gid),
                    await self.store.roles(conn, gid),
                )
        return gids

    async def _user_notice(
        self, user_id: str, notice: dict[str, object], drop_roles: bool = False
    ) -> None:
        async with self.db.engine.connect() as conn:
            gids = await self.store.groups_with(conn, lambda m: m.user_id == user_id)
        for gid in gids:
            async with self.db.engine.connect() as conn:
                row = await self.store.find_group(conn, gid)
            if row is None:
                continue
            signed = await self.external_sender.signed_notice(
                row.cipher_suite, {**notice, "group_id": b64u(gid), "at": self.now()}
            )
            key = await self.external_sender.key(row.cipher_suite)
            async with self.db.transaction() as conn:
                # Dropping roles changes what a group snapshot pairs with the row.
                sent = await notice_in(conn, self.store, self.fanout, gid, signed, drop_roles)
                if sent and drop_roles:
                    await self.store.set_role(conn, gid, user_id, None)
                    # Normally the user's leaves went first (and a successor with them); a leaf
                    # the event did not name must not make the deleted user the successor.
                    members = await self.store.members(conn, gid)
                    await self.succession.keep_admin_in(
                        conn,
                        gid,
                        key,
                        [m for m in members if m.user_id != user_id],
                        await self.store.roles(conn, gid),
                    )


async def notice_in(
    conn: AsyncConnection,
    store: GroupStore,
    fanout: Fanout,
    group_id: bytes,
    signed: bytes,
    bump_rev: bool = False,
) -> bool:
    """A signed server notice to the group's members that are not gone, as the group's next
    item, in the caller's transaction; False if the group is gone."""
    seq = (
        await conn.execute(
            sa.update(ds_groups)
            .where(ds_groups.c.id == group_id)
            .values(last_seq=ds_groups.c.last_seq + 1, rev=ds_groups.c.rev + int(bump_rev))
            .returning(ds_groups.c.last_seq)
        )
    ).scalar_one_or_none()
    if seq is None:
        return False
    members = await store.members(conn, group_id)
    await fanout.fanout(conn, group_id, seq, ITEM_SERVER_NOTICE, signed, members)
    return True
