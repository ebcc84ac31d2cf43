"""Cross-process presence on a real PostgreSQL (notify/presence.py): what one process publishes
another sees; disconnects and shutdown withdraw rows; the heartbeat keeps rows alive past the
TTL and re-publishes rows swept while it was away; a replaced socket keeps its client online."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import sqlalchemy as sa

from roost.server.notify.hub import Hub
from roost.server.notify.presence import Presence
from roost.server.notify.tables import notify_presence
from roost.server.store import Database

from .conftest import _truncate

TTL = 3  # heartbeat every second


@pytest.fixture
async def db(migrated_postgres_url: str) -> AsyncIterator[Database]:
    await _truncate(migrated_postgres_url)
    database = Database(migrated_postgres_url)
    yield database
    await database.dispose()


@pytest.fixture
async def two(db: Database) -> AsyncIterator[tuple[Presence, Presence]]:
    a, b = Presence(db, TTL, "proc-a"), Presence(db, TTL, "proc-b")
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def eventually(cond: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


class _Socket:
    """What the hub needs of a connection (the session's interface), nothing more."""

    def __init__(self, client_uuid: str) -> None:
        self.client_uuid = client_uuid
        self.user_uuid = "user-" + client_uuid
        self.closed: int | None = None

    def on_item(self, wake: object) -> None:
        pass

    def on_acked(self, queue_id: bytes | None, up_to: int) -> None:
        pass

    def terminate(self, code: int, reason: str) -> None:
        self.closed = code


async def test_published_on_connect_withdrawn_on_disconnect_and_shutdown(two):  # type: ignore[no-untyped-def]
    a, b = two
    a.mark("c1", True)
    await a.settled()
    assert await b.online_elsewhere("c1")
    assert not await a.online_elsewhere("c1")  # its own sockets: the hub answers for those
    a.mark("c1", False)
    await a.settled()
    assert not await b.online_elsewhere("c1")

    a.mark("c2", True)
    await a.settled()
    assert await b.online_elsewhere("c2")
    await a.stop()  # clean shutdown: nothing left behind
    assert not await b.online_elsewhere("c2")


async def test_heartbeat_outlives_the_ttl_and_republishes_swept_rows(two, db):  # type: ignore[no-untyped-def]
    a, b = two
    a.mark("c1", True)
    await a.settled()
    await asyncio.sleep(TTL + 1)  # without the heartbeat the row would have lapsed
    assert await b.online_elsewhere("c1")

    async with db.transaction() as conn:  # as a sweep would, had a's database been away
        await conn.execute(sa.delete(notify_presence))
    assert not await b.online_elsewhere("c1")

    async def back() -> bool:
        return await b.online_elsewhere("c1")

    await eventually(back, timeout=TTL)


async def test_rows_of_a_silent_process_lapse_and_are_swept(db):  # type: ignore[no-untyped-def]
    b = Presence(db, TTL, "proc-b")
    await b.start()
    try:
        async with db.transaction() as conn:  # a process that stopped refreshing 1 s ago
            await conn.execute(
                sa.insert(notify_presence).values(
                    client_uuid="c1",
                    process_id="proc-dead",
                    expires_at_ms=sa.literal_column(
                        "(extract(epoch from clock_timestamp()) * 1000)::bigint + 1000"
                    ),
                )
            )
        assert await b.online_elsewhere("c1")
        await asyncio.sleep(1.2)
        assert not await b.online_elsewhere("c1")  # lapsed: the read checks the expiry

        async def swept() -> bool:
            async with db.engine.connect() as conn:
                n = await conn.scalar(sa.select(sa.func.count()).select_from(notify_presence))
            return n == 0

        await eventually(swept, timeout=TTL)
    finally:
        await b.stop()


async def test_hub_reports_to_presence_and_a_replaced_socket_keeps_the_client_online(two):  # type: ignore[no-untyped-def]
    a, b = two
    hub = Hub()
    hub.presence = a
    first, second = _Socket("c1"), _Socket("c1")
    hub.attach(first)
    await hub.presence_settled()
    assert hub.is_connected("c1") and await b.online_elsewhere("c1")

    hub.attach(second)  # the client reconnected: the older socket is closed (4409)
    hub.detach(first)  # its session ends later: must not withdraw the newer socket's row
    await hub.presence_settled()
    assert first.closed == 4409
    assert await b.online_elsewhere("c1")

    hub.client_gone("c1")  # client removed
    await hub.presence_settled()
    assert not hub.is_connected("c1") and not await b.online_elsewhere("c1")


def test_presence_is_for_postgresql_only(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        Presence(Database(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"), TTL)
