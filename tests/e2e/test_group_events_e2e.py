"""Deletions and display-name changes reach a keyed group that the homeserver cannot open.

The DS of a real ``roost serve`` (SQLite and PostgreSQL) holds a group's key only in memory,
after a member's request. Restarted, it holds none: a display-name change and an account
deletion then wait in its log, and the group gets them — the signed notices, the deleted
member's leaf gone and the server's Remove proposal — before the next request that brings the
key is answered. The members then commit the removal as usual.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import Users
from tests.integration.harness import ServerProcess

from .helpers import connect, member, sync_all

ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(params=ENGINES)
def restartable(request, tmp_path):
    database_url = ""
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_database")()
    server = ServerProcess(request.param, tmp_path / "server", database_url).start()
    yield server
    server.stop()


async def test_events_wait_for_the_groups_key_then_reach_the_group(restartable):
    users = Users(restartable.url)
    try:
        alice = member(await users.new("alice", keypackages=2))
        bob = member(await users.new("bob", keypackages=2))
        carol = member(await users.new("carol", keypackages=2))
        for other in (bob, carol):
            await connect(alice, other)
        gid = (await alice.groups.create()).group_id
        await alice.groups.invite(gid, [bob.user_id, carol.user_id])
        await sync_all(alice, bob, carol)
        assert len(bob.groups.leaves_of(gid, carol.user_id)) == 1

        restartable.stop()
        restartable.spawn()  # same port and data: the DS holds no group key now

        await bob.client.set_display_name("Robert")
        await carol.client.delete_account()
        await asyncio.sleep(2.0)  # the account-events consumer has run (it wakes at once)
        assert [e.kind for e in await alice.sync()] == []  # the group could not be told

        await alice.groups.info(gid)  # a request with the key: the group catches up first
        events = await alice.sync()
        notices = {e.notice["type"]: e.notice for e in events if e.kind == "notice"}
        assert notices["display_name_changed"]["user_id"] == bob.user_id
        assert notices["display_name_changed"]["display_name"] == "Robert"
        assert notices["user_deleted"]["user_id"] == carol.user_id
        assert "proposal" in [e.kind for e in events]  # the server's Remove of carol's leaf

        await alice.groups.commit_pending(gid)
        await bob.sync()
        assert not bob.groups.leaves_of(gid, carol.user_id), "carol's leaf is still in the tree"
        await alice.groups.send(gid, "without carol")
        await bob.sync()
        assert (alice.client_id, "without carol") in bob.messages(gid)
    finally:
        await users.aclose()
