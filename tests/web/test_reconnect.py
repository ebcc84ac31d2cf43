"""The realtime socket survives a server restart: the page takes a new ticket, resumes after
what it processed (no message lost, none shown twice) and keeps acking."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.integration.harness import ServerProcess

from .conftest import talking_pair


@pytest.fixture
def restartable_server(tmp_path):
    srv = ServerProcess("sqlite", tmp_path / "web-restart")
    srv.start()
    yield srv
    srv.stop()


def test_pages_reconnect_with_a_new_ticket_after_a_restart(restartable_server, browser):
    srv = restartable_server
    talking_pair(browser, srv.url)
    browser.call("send", name="alice", text="before the restart")
    browser.call("messages", name="bob", wait_for="before the restart")

    srv.stop()
    for name in ("alice", "bob"):
        status = browser.call("text", name=name, selector="#status", wait_for="Offline")
        assert status == "Offline, reconnecting…"
    srv.spawn()  # same port, same database
    for name in ("alice", "bob"):
        assert browser.call("text", name=name, selector="#status", wait_for="Online") == "Online"

    browser.call("send", name="bob", text="after the restart")
    got = browser.call("messages", name="alice", wait_for="after the restart")
    assert [(m["text"], m["mine"]) for m in got] == [
        ("before the restart", True),
        ("after the restart", False),
    ]
    browser.call("send", name="alice", text="still here")
    got = browser.call("messages", name="bob", wait_for="still here")
    assert [m["text"] for m in got] == ["before the restart", "after the restart", "still here"]

    # Both pages acknowledged everything they were delivered: the server keeps nothing queued.
    assert _queued_until_empty(srv) == (0, 0)

    # Each page opened a second socket, each with its own ticket.
    for name in ("alice", "bob"):
        urls = browser.call("requests", name=name)["requests"]
        tickets = [u for u in urls if "/v1/realtime?ticket=" in u]
        assert len(tickets) >= 2 and len(set(tickets)) == len(tickets)


def _queued_until_empty(srv: ServerProcess, timeout: float = 10.0) -> tuple[int, int]:
    """Items still stored in group queues and direct queues (acks delete them), once zero or
    at the timeout."""
    [db] = srv.data_dir.rglob("roost.db")
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as conn:
            counts = tuple(
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("queue_messages", "direct_messages")
            )
        if counts == (0, 0) or time.monotonic() > deadline:
            return counts  # type: ignore[return-value]
        time.sleep(0.2)
