"""A commit catches up first, end to end against a real homeserver process (SQLite and
PostgreSQL): a member that commits while others' application messages of older epochs wait
in its queue still reads them (a group keeps only one past epoch's secrets), and the events
of that catch-up reach the user: returned by the next ``sync``, or handed to a running
``listen`` sink."""

from __future__ import annotations

import asyncio

from roost.client.groups import GroupEvent

from .helpers import Member, connect, new_member, sync_all


async def _carol_and_alice(users) -> tuple[Member, Member, Member, Member, bytes]:
    """carol (admin) with alice in a group; bob and dave connected to carol, not in it."""
    carol = await new_member(users, "carol")
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    dave = await new_member(users, "dave")
    for other in (alice, bob, dave):
        await connect(carol, other)
    gid = (await carol.groups.create()).group_id
    await carol.groups.invite(gid, [alice.user_id])
    await sync_all(alice, carol)
    return carol, alice, bob, dave, gid


async def test_commits_without_sync_keep_older_messages(users) -> None:
    carol, alice, bob, dave, gid = await _carol_and_alice(users)
    first = carol.groups.group(gid).epoch
    await alice.groups.send(gid, "sent at the first epoch")
    # carol adds bob, then dave, without syncing: alice's message waits in her queue.
    await carol.groups.invite(gid, [bob.user_id])
    await alice.groups.send(gid, "sent while bob joins")
    await carol.groups.invite(gid, [dave.user_id])
    assert carol.groups.group(gid).epoch == first + 2

    events = await carol.sync()
    rejected = [e.text for e in events if e.kind == "rejected"]
    assert rejected == []
    assert [m for _, m in carol.messages(gid)] == [
        "sent at the first epoch",
        "sent while bob joins",
    ]
    assert all(s == alice.client_id for s, _ in carol.messages(gid))
    # The catch-up's events are handed out once: the next sync has nothing new.
    assert [e for e in await carol.sync() if e.kind == "message"] == []
    assert [e.text for e in carol.groups.history.messages(gid)] == [
        "sent at the first epoch",
        "sent while bob joins",
    ]


async def test_catch_up_events_reach_a_running_listener(users) -> None:
    carol, alice, bob, _, gid = await _carol_and_alice(users)
    got: list[GroupEvent] = []
    stop = asyncio.Event()

    async def heard(text: str) -> None:
        async with asyncio.timeout(30):
            while text not in [e.message for e in got if e.kind == "message"]:
                await asyncio.sleep(0.05)

    # A polling listener that would poll again only in an hour: after its first pass, what
    # reaches its sink comes from carol's commit catching up.
    await alice.groups.send(gid, "before carol listens")
    task = asyncio.create_task(
        carol.groups.listen(got.append, stop=stop, realtime=False, poll_interval=3600)
    )
    try:
        await heard("before carol listens")  # the first pass is done
        await alice.groups.send(gid, "while carol listens")
        await carol.groups.invite(gid, [bob.user_id])
        await heard("while carol listens")
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert [e.message for e in got if e.kind == "message"] == [
        "before carol listens",
        "while carol listens",
    ]
    assert [e for e in got if e.kind == "rejected"] == []
    # Handed to the listener, not again to a later sync.
    assert [e for e in await carol.sync() if e.kind == "message"] == []


async def test_events_of_the_catch_up_after_epoch_conflict_are_not_lost(users) -> None:
    carol, alice, _, _, gid = await _carol_and_alice(users)
    epoch = carol.groups.group(gid).epoch
    posted = 0
    request = carol.client.request

    async def alice_commits_first(method: str, path: str, **kw):  # type: ignore[no-untyped-def]
        """carol's first commit is built, then alice's self-update lands before it."""
        nonlocal posted
        if method == "POST" and path.endswith("/commits"):
            posted += 1
            if posted == 1:
                await alice.groups.send(gid, "before alice's update")
                await alice.groups.update(gid)
        return await request(method, path, **kw)

    carol.client.request = alice_commits_first  # type: ignore[method-assign]
    event = await carol.groups.update(gid)
    assert posted == 2  # 409 epoch_conflict, then built again after catching up
    assert event.epoch == epoch + 2
    events = await carol.sync()
    assert [(e.kind, e.sender, e.epoch) for e in events if e.kind in ("message", "commit")] == [
        ("message", alice.client_id, epoch),
        ("commit", alice.client_id, epoch + 1),
    ]
    assert [e for e in events if e.kind == "rejected"] == []
    await alice.sync()
    assert alice.groups.group(gid).epoch == epoch + 2
