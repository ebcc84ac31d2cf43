"""The order of Welcomes and group-queue items against a real homeserver process (SQLite and
PostgreSQL). A client removed while away and added again first reads the backlog of its old
membership on its old state, then joins from the new Welcome, then reads the new membership's
items; a Welcome older than the state it holds (or than a newer Welcome to the same group)
never replaces that state; ``sync`` and ``listen`` on one ``Groups`` join a Welcome once."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from roost.client.groups import GroupEvent

from .helpers import Member, connect, new_member, sync_all


async def _pair(users) -> tuple[Member, Member, bytes]:
    alice = await new_member(users, "alice", keypackages=4)
    bob = await new_member(users, "bob", keypackages=4)
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    return alice, bob, gid


def _kinds(m: Member, gid: bytes) -> list[str]:
    return [e.kind for e in m.seen if e.group_id == gid and e.kind != "proposal"]


async def test_removed_while_away_and_added_again_reads_the_old_backlog_first(users):
    alice, bob, gid = await _pair(users)
    await alice.groups.invite(gid, [bob.user_id])
    await bob.sync()
    assert _kinds(bob, gid) == ["joined"]

    # Bob is away: a message he may read, his removal, one he may not, his return, one more.
    await alice.groups.send(gid, "before removal")
    await alice.groups.remove(gid, bob.user_id)
    await alice.groups.send(gid, "while bob is out")
    await alice.groups.invite(gid, [bob.user_id])
    await alice.groups.send(gid, "after re-add")

    await bob.sync()
    assert bob.messages(gid) == [
        (alice.client_id, "before removal"),
        (alice.client_id, "after re-add"),
    ], bob.seen
    # The removing commit never reaches the removed leaf: the new Welcome replaces the old state.
    assert _kinds(bob, gid) == ["joined", "message", "joined", "message"], bob.seen
    assert not [e for e in bob.seen if e.kind == "rejected"], bob.seen
    # Both sides go on in the new membership.
    await bob.groups.send(gid, "back")
    await sync_all(alice)
    assert alice.messages(gid) == [(bob.client_id, "back")]


async def test_a_stale_welcome_never_replaces_the_newer_membership(users):
    alice, bob, gid = await _pair(users)
    # Bob never synced between: invited, removed, invited again.
    await alice.groups.invite(gid, [bob.user_id])
    await alice.groups.remove(gid, bob.user_id)
    await alice.groups.invite(gid, [bob.user_id])
    epoch = alice.groups.group(gid).epoch

    await bob.sync()
    joined = [e for e in bob.seen if e.kind == "joined"]
    assert [(e.group_id, e.epoch) for e in joined] == [(gid, epoch)], bob.seen
    assert not [e for e in bob.seen if e.kind in ("welcome_failed", "rejected")], bob.seen
    await alice.groups.send(gid, "hi bob")
    await bob.sync()
    assert bob.messages(gid) == [(alice.client_id, "hi bob")]


async def test_a_welcome_older_than_the_state_held_is_passed_over(users):
    alice, bob, gid = await _pair(users)
    await alice.groups.invite(gid, [bob.user_id])
    await alice.groups.remove(gid, bob.user_id)
    await alice.groups.invite(gid, [bob.user_id])
    page = await bob.client.fetch_direct(0)
    old = next(e for e in page.events if e.type == "welcome")
    await bob.sync()
    epoch = alice.groups.group(gid).epoch
    assert [(e.kind, e.epoch) for e in bob.seen] == [("joined", epoch)], bob.seen

    # The old Welcome comes again (at-least-once delivery, past the cursor): passed over.
    again = replace(old, seq=bob.groups.store.cursors.direct_after + 1)
    out: list[GroupEvent] = []
    assert await bob.groups._sync._direct_events([again], out)
    assert out == []
    assert bob.groups.group(gid).epoch == epoch
    await alice.groups.send(gid, "still here")
    await bob.sync()
    assert bob.messages(gid) == [(alice.client_id, "still here")]


async def test_sync_and_listen_join_a_welcome_once(users):
    alice, bob, gid = await _pair(users)
    await bob.sync()  # bob's queue exists before the listener starts
    stop = asyncio.Event()
    heard: list = []
    listener = asyncio.create_task(bob.groups.listen(heard.append, stop=stop))
    try:
        await alice.groups.invite(gid, [bob.user_id])
        await asyncio.gather(bob.sync(), bob.sync())
        deadline = asyncio.get_running_loop().time() + 30
        while not any(e.kind == "joined" for e in heard + bob.seen):
            assert asyncio.get_running_loop().time() < deadline, "no join within 30 s"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let a duplicate join, if any, show up
    finally:
        stop.set()
        await asyncio.wait_for(listener, timeout=30)
    joined = [e for e in heard + bob.seen if e.kind == "joined"]
    assert len(joined) == 1, joined
