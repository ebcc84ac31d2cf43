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
