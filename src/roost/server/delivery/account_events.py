"""The account-events consumer: the AS's deletions and display-name changes (here, or on a
member's own server) and the domains the operator forgot (``forgotten_domains.py``) go into the
DS's log of group events, which every group applies when the DS can open it
(``group_events.py``: leaves gone, the server's Remove proposals, signed notices); old
idempotency records and events every group has seen are pruned.

One background task, woken by the AS's deletion hooks (and after a commit that leaves gone
leaves behind: their Removes are issued again for the new epoch), and once a second to apply
events another process logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import sqlalchemy as sa

from ..auth.service import AuthService
from ..store import Database
from ..store.async_engine import AsyncConnection
from .group_events import GroupEvents
from .group_store import GroupStore
from .send_writer import SEND_ID_RETENTION
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
        events: GroupEvents,
        issue_removes: Callable[[bytes], Awaitable[int]],
        clock: Callable[[], float] = time.time,
        sweep_forgotten: Callable[[], Awaitable[set[str]]] | None = None,
    ) -> None:
        self.db = db
        self.auth = auth
        self.store = store
        self.events = events
        self.issue_removes = issue_removes
        self.clock = clock
        # The domains the operator newly forgot: their members leave (forgotten_domains.py).
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
        """Delete idempotency records older than the retention (they only answer retries) and
        the group events every group has seen."""
        self._last_prune = self.clock()
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(ds_sends).where(ds_sends.c.created_at < self.now() - SEND_ID_RETENTION)
            )
        await self.events.prune()
        return result.rowcount or 0

    async def process(self) -> int:
        """Hand the AS's events (and newly forgotten domains) over to the DS's log, then bring
        every group this process can open up to date and issue outstanding Removes.

        One consumer of the AS's outbox at a time: a lock within the process, and on PostgreSQL
        an advisory lock across the processes sharing the database (a process that does not get
        it leaves the handing over to the one that holds it), so no event is logged twice.
        Applying the log is safe from any process (``GroupEvents`` checks each group's place
        under its row lock)."""
        async with self._lock:
            async with self._consumer() as mine:
                done = await self._hand_over() if mine else 0
            await self.events.catch_up_openable()
            await self._outstanding_removes()
        return done

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

    async def _hand_over(self) -> int:
        done = 0
        while True:
            events = await self.auth.pending_account_events()
            if not events:
                break
            async with self.db.transaction() as conn:
                for ev in events:
                    logged = _group_event(ev.event_type, ev.user_id, json.loads(ev.payload))
                    if logged is not None:
                        await self.events.log(conn, logged)
            await self.auth.drop_account_events([ev.id for ev in events])
            done += len(events)
        if self.sweep_forgotten is not None:
            domains = await self.sweep_forgotten()
            if domains:
                async with self.db.transaction() as conn:
                    for domain in sorted(domains):
                        await self.events.log(conn, {"type": "domain_forgotten", "domain": domain})
        return done

    async def _outstanding_removes(self) -> None:
        """Groups whose outstanding Removes were dropped by a commit get them again."""
        with_gone = sa.select(ds_members.c.group_id).where(ds_members.c.gone.is_(True))
        async with self.db.engine.connect() as conn:
            pending = await self.store.openable_groups(conn, ds_groups.c.id.in_(with_gone))
        for group_id in pending:
            await self.issue_removes(group_id)


def _group_event(
    event_type: str, user_id: str, payload: dict[str, object]
) -> dict[str, object] | None:
    """The DS log's entry for one AS account event."""
    if event_type == "client_removed":
        return {"type": "clients_gone", "client_ids": [payload["client_id"]]}
    if event_type == "user_deleted":
        return {
            "type": "user_deleted",
            "user_id": user_id,
            "client_ids": payload.get("client_ids", []),
        }
    if event_type == "display_name_changed":
        return {
            "type": "display_name_changed",
            "user_id": user_id,
            "display_name": payload.get("display_name"),
        }
    return None
