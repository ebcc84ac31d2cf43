"""One group-message queue per membership, against a real homeserver process (SQLite and
PostgreSQL): a stored queue holds the items of one group only, a membership's queue is deleted
when it ends, a queue made while the realtime socket is open is served on it at once, and a
home from before (one queue shared by its groups) keeps working beside the new queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from roost.client import Home, RoostClient, RoostError
from roost.client.groups import GroupEvent, Groups
from roost.protocol.base64url import b64u
from roost.protocol.queue_item import QueueItem

from .helpers import Member, as_an_old_home, connect, member, new_member


async def _until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def _database(server) -> AsyncIterator[Any]:
    """A connection to the server's own database (read as an observer would)."""
    from roost.server.config import build_config
    from roost.server.store.engine import make_engine

    engine = make_engine(build_config({}, server.env).sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def _registrations(server, *members: Member) -> dict[str, set[bytes]]:
    """Every queue the DS delivers to (b64u id) -> the groups whose members it serves, of the
    groups ``members`` hold."""
    from roost.server.config import build_config
    from roost.server.delivery.tables import ds_members
    from tests.server.sealed_members import member_ids

    # The rows are sealed at rest: opened with the server's seal key file and the group keys
    # the members hold, as the DS does while it serves them.
    key_path = build_config({}, server.env).queue_seal_key_path
    keys = {gid: m.groups.group_key(gid) for m in members for gid in m.groups.local_group_ids()}
    out: dict[str, set[bytes]] = {}
    async with _database(server) as conn:
        for row in await conn.execute(ds_members.select().where(ds_members.c.group_id.in_(keys))):
            gid = bytes(row.group_id)
            held = [k for k in [keys[gid]] if k is not None]
            queue_id = member_ids(key_path, gid, row.leaf_index, bytes(row.sealed), held).queue_id
            if queue_id is not None:
                out.setdefault(b64u(queue_id), set()).add(gid)
    return out


async def _stored_items(server, queue_id: str) -> list[QueueItem]:
    from roost.protocol.base64url import unb64u
    from roost.server.queues.tables import queue_messages

    async with _database(server) as conn:
        rows = await conn.execute(
            queue_messages.select().where(queue_messages.c.queue_id == unb64u(queue_id))
        )
        return [QueueItem.decode(bytes(r.payload)) for r in rows]


async def _queue_exists(server, queue_id: str) -> bool:
    from roost.protocol.base64url import unb64u
    from roost.server.queues.tables import queues

    async with _database(server) as conn:
        rows = await conn.execute(queues.select().where(queues.c.id == unb64u(queue_id)))
        return rows.first() is not None


async def _bob_with(users, alice: Member, *, home: Home | None = None) -> Member:
    if home is None:
        bob = await new_member(users, "bob")
    else:
        bob = member(await users.new("bob", keypackages=3, home=home))
    await connect(alice, bob)
    return bob


async def _invited(alice: Member, bob: Member) -> bytes:
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await bob.sync()
    return gid


async def _left(alice: Member, bob: Member, gid: bytes) -> None:
    """bob's leave proposal committed by alice and handed back to bob, who forgets the group."""
    await bob.groups.leave(gid)
    for _ in range(100):
        await alice.groups.sync(auto_commit=True)
        await bob.sync()
        if gid not in bob.groups.store.cursors.group_queues:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("bob's leave never came back")


async def test_each_group_has_its_own_queue_holding_that_group_only(users, server):
    alice = await new_member(users, "alice")
    bob = await _bob_with(users, alice)
    one = await _invited(alice, bob)
    two = await _invited(alice, bob)
    q1, q2 = bob.groups.queue_of(one), bob.groups.queue_of(two)
    assert q1 is not None and q2 is not None and q1.id != q2.id
    assert bob.groups.queue_id == ""  # no shared queue in a new home
    for i in range(3):
        await alice.groups.send(one, f"one {i}")
        await alice.groups.send(two, f"two {i}")

    # The server's tables: each queue serves one group, and holds that group's items only.
    registered = await _registrations(server, alice, bob)
    assert all(len(groups) == 1 for groups in registered.values())
    assert registered[q1.id] == {one} and registered[q2.id] == {two}
    for queue, gid in ((q1, one), (q2, two)):
        items = await _stored_items(server, queue.id)
        assert len(items) == 3 and {item.group_id for item in items} == {gid}

    await bob.sync()
    assert bob.messages(one) == [(alice.client_id, f"one {i}") for i in range(3)]
    assert bob.messages(two) == [(alice.client_id, f"two {i}") for i in range(3)]
    assert await _stored_items(server, q1.id) == []  # acked


async def test_a_membership_that_ends_takes_its_queue_with_it(users, server, tmp_path):
    alice = await new_member(users, "alice")
    home = Home(tmp_path / "bob")
    bob = await _bob_with(users, alice, home=home)
    left = await _invited(alice, bob)
    removed = await _invited(alice, bob)
    deleted = await _invited(alice, bob)
    kept = await _invited(alice, bob)
    queues = {gid: bob.groups.queue_of(gid) for gid in (left, removed, deleted, kept)}
    assert all(q is not None for q in queues.values())

    await alice.groups.send(left, "before bob left")
    await _left(alice, bob, left)
    assert bob.messages(left) == [(alice.client_id, "before bob left")]

    # A removed client is not sent the removing commit: it learns it from the DS's refusal.
    # What arrived before the removal is still read before the queue goes.
    await alice.groups.send(removed, "before bob was removed")
    await alice.groups.remove(removed, bob.user_id)
    with pytest.raises(RoostError) as refused:
        await bob.groups.send(removed, "am I still in?")
    assert refused.value.code == "not_member"
    events = [e for e in await bob.sync() if e.group_id == removed]
    assert [e.kind for e in events] == ["message", "removed"]
    assert events[0].message == "before bob was removed"

    await alice.groups.delete(deleted)
    await bob.sync()

    for gid in (left, removed, deleted):
        queue = queues[gid]
        assert queue is not None and not await _queue_exists(server, queue.id), gid
        assert bob.groups.queue_of(gid) is None
    assert bob.groups.store.cursors.retired == {}
    kept_queue = queues[kept]
    assert kept_queue is not None and await _queue_exists(server, kept_queue.id)
    assert set(bob.groups.queues()) == {kept_queue.id}
    # A home opened again knows only the queue still in use.
    again = Groups(users.track(RoostClient.open(home.path)))
    assert set(again.queues()) == {kept_queue.id}


async def test_a_group_joined_while_listening_is_served_on_the_open_socket(users):
    alice = await new_member(users, "alice")
    bob = await _bob_with(users, alice)
    seen: list[GroupEvent] = []
    stop = asyncio.Event()
    task = asyncio.create_task(bob.groups.listen(seen.append, stop=stop))
    try:
        await _until(lambda: bob.groups.realtime is not None and bool(bob.groups.realtime.ready))
        socket = bob.groups.realtime
        assert socket is not None and socket.accepted == []  # no group yet

        # Invited: the Welcome comes over the socket; the new queue is subscribed on it.
        gid = (await alice.groups.create()).group_id
        await alice.groups.invite(gid, [bob.user_id])
        await _until(lambda: any(e.kind == "joined" and e.group_id == gid for e in seen))
        await alice.groups.send(gid, "over the same socket")
        await _until(lambda: any(e.message == "over the same socket" for e in seen))

        # A group bob creates while listening: its queue is served too.
        own = (await bob.groups.create()).group_id
        await bob.groups.invite(own, [alice.user_id])
        await alice.groups.sync()
        await alice.groups.send(own, "to bob's own group")
        await _until(lambda: any(e.message == "to bob's own group" for e in seen))

        assert bob.groups.realtime is socket  # never reconnected
        queues = {bob.groups.queue_of(g).id for g in (gid, own)}  # type: ignore[union-attr]
        assert len(queues) == 2 and queues <= set(socket.accepted)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_a_home_from_before_keeps_its_shared_queue_and_gets_new_ones(users, server, tmp_path):
    alice = await new_member(users, "alice")
    home = Home(tmp_path / "bob")
    old_bob = await _bob_with(users, alice, home=home)
    old = await _invited(alice, old_bob)
    shared = await as_an_old_home(old_bob)
    await alice.groups.send(old, "while bob upgraded")

    bob = member(users.track(RoostClient.open(home.path)))
    assert bob.groups.queue_id == shared and bob.groups.queue_of(old).id == shared  # type: ignore[union-attr]
    await bob.sync()
    assert bob.messages(old) == [(alice.client_id, "while bob upgraded")]

    new = await _invited(alice, bob)  # a new membership: a queue of its own
    own = bob.groups.queue_of(new)
    assert own is not None and own.id != shared
    registered = await _registrations(server, alice, bob)
    assert registered[shared] == {old} and registered[own.id] == {new}

    await alice.groups.send(old, "old group")
    await alice.groups.send(new, "new group")
    await bob.sync()
    assert bob.messages(old)[-1] == (alice.client_id, "old group")
    assert bob.messages(new) == [(alice.client_id, "new group")]

    # The shared queue stays while a group uses it, and goes with the last one.
    assert await _queue_exists(server, shared)
    await _left(alice, bob, old)
    assert bob.groups.queue_id == ""
    assert not await _queue_exists(server, shared)
    await alice.groups.send(new, "still here")
    await bob.sync()
    assert bob.messages(new)[-1] == (alice.client_id, "still here")
