"""Unit checks of the cross-process pieces: NOTIFY payload batching and the SQLite guard."""

from __future__ import annotations

import json

from roost.server.notify.pg_bridge import MAX_PAYLOAD, encode_batches, listen_dsn
from roost.server.notify.sqlite_guard import SqliteServeLock, sqlite_path


def test_batches_stay_under_the_notify_limit_and_keep_every_event_in_order():
    events = [["q", "c" * 36, "ab" * 16, seq] for seq in range(1, 2001)]
    payloads = encode_batches("0123456789abcdef", events)
    assert len(payloads) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD < 8000 for p in payloads)
    decoded = [json.loads(p) for p in payloads]
    assert {d["o"] for d in decoded} == {"0123456789abcdef"}
    assert [e for d in decoded for e in d["e"]] == events


def test_one_small_transaction_is_one_notification():
    [payload] = encode_batches("o", [["q", "u", "", 7], ["a", "c", "", 3]])
    assert json.loads(payload) == {"o": "o", "e": [["q", "u", "", 7], ["a", "c", "", 3]]}
    assert encode_batches("o", []) == []


def test_listen_dsn_drops_the_sqlalchemy_driver():
    assert listen_dsn("postgresql+asyncpg://u:p@h:5/db") == "postgresql://u:p@h:5/db"
    assert listen_dsn("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_second_server_on_one_sqlite_file_is_told(tmp_path, caplog):
    path = sqlite_path(f"sqlite+aiosqlite:///{tmp_path / 'roost.db'}")
    assert path == tmp_path / "roost.db"
    assert sqlite_path("sqlite+aiosqlite:///:memory:") is None
    first = SqliteServeLock(path).acquire()
    second = SqliteServeLock(path).acquire()
    try:
        assert not first.shared and second.shared
        assert "realtime wake-ups do not cross processes on SQLite" in caplog.text
    finally:
        second.release()
        first.release()
    third = SqliteServeLock(path).acquire()  # the first one gone: no warning any more
    assert not third.shared
    third.release()


class _RecordingHub:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def queue_item(self, wake) -> None:
        self.events.append(("q", wake.user_uuid, wake.queue_id, wake.seq, wake.payload))

    def acked(self, client_uuid, queue_id, up_to) -> None:
        self.events.append(("a", client_uuid, queue_id, up_to))

    def client_gone(self, client_uuid) -> None:
        self.events.append(("c", client_uuid))

    def user_gone(self, user_uuid) -> None:
        self.events.append(("u", user_uuid))

    def resync(self) -> None:
        self.events.append(("resync",))


async def test_notifications_are_sent_only_by_committed_transactions(postgres_url):
    """Two bridges on one database (two 'processes'): B hears A's committed events, in commit
    order, and nothing of a rolled-back transaction; A skips its own. A group queue's events
    name no client or user (nothing on the wire ties the queue to one)."""
    import asyncio

    import pytest
    import sqlalchemy as sa

    from roost.server.notify.pg_bridge import PgBridge
    from roost.server.queues.service import WakeUp
    from roost.server.store import Database

    db = Database(postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    hub_a, hub_b = _RecordingHub(), _RecordingHub()
    a, b = PgBridge(hub_a, postgres_url), PgBridge(hub_b, postgres_url)
    await a.start()
    await b.start()
    try:
        assert a.connected.is_set() and b.connected.is_set()
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute(sa.text("SELECT 1"))
                a.on_enqueue(conn, WakeUp(b"\x01" * 16, 1, b"x"))
                raise RuntimeError("roll back")
        async with db.transaction() as conn:
            a.on_enqueue(conn, WakeUp(b"\x02" * 16, 5, b"secret payload"))
            a.on_enqueue(conn, WakeUp(None, 9, b"secret", user_uuid="user-1"))
            a.on_ack(conn, None, b"\x02" * 16, 5)
            a.on_ack(conn, "client-1", None, 9)
            await a.on_client_removed(conn, "client-2")
            await a.on_user_deleted(conn, "user-2", ["client-3"])
        for _ in range(100):
            if len(hub_b.events) >= 7:
                break
            await asyncio.sleep(0.05)
        assert hub_b.events == [
            ("resync",),
            ("q", None, b"\x02" * 16, 5, None),  # never the payload
            ("q", "user-1", None, 9, None),
            ("a", None, b"\x02" * 16, 5),
            ("a", "client-1", None, 9),
            ("c", "client-2"),
            ("u", "user-2"),
        ]
        assert hub_a.events == [("resync",)]  # its own events are not heard back
    finally:
        await a.stop()
        await b.stop()
        await db.dispose()


async def test_a_transaction_too_large_for_one_notification_reaches_the_other_process_whole(
    postgres_url,
):
    """2,000 enqueues in one transaction need several payloads (each under PostgreSQL's limit):
    B hears every one of them, in order, once A's transaction commits."""
    import asyncio

    from roost.server.notify.pg_bridge import PgBridge
    from roost.server.queues.service import WakeUp
    from roost.server.store import Database

    db = Database(postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    hub_a, hub_b = _RecordingHub(), _RecordingHub()
    a, b = PgBridge(hub_a, postgres_url), PgBridge(hub_b, postgres_url)
    await a.start()
    await b.start()
    queue = b"\x03" * 16
    try:
        async with db.transaction() as conn:
            for seq in range(1, 2001):
                a.on_enqueue(conn, WakeUp(queue, seq, b"payload"))
        for _ in range(100):
            if len(hub_b.events) >= 2001:
                break
            await asyncio.sleep(0.05)
        assert hub_b.events == [("resync",)] + [("q", None, queue, s, None) for s in range(1, 2001)]
        assert hub_a.events == [("resync",)]
    finally:
        await a.stop()
        await b.stop()
        await db.dispose()
