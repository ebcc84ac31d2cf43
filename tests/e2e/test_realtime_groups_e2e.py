"""Group messages pushed over the realtime WebSocket, through a dropped
connection and a restart — no loss, no duplicates, order kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from roost.client.groups import GroupEvent

from .helpers import alice_and_bob_in_a_group, connect, new_member


async def _until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_websocket_delivery_with_reconnect_and_resume(users):
    alice, bob, gid = await alice_and_bob_in_a_group(users)

    got: list[GroupEvent] = []

    def collect(e: GroupEvent) -> None:
        if e.kind == "message":
            got.append(e)

    def start() -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        return stop, asyncio.create_task(bob.groups.listen(collect, stop=stop))

    def connected() -> bool:
        rt = bob.groups.realtime
        return rt is not None and bool(rt.ready)

    stop, task = start()
    await _until(connected)
    first = bob.groups.realtime
    t0 = time.monotonic()
    for i in range(15):
        await alice.groups.send(gid, f"m{i}")
    await _until(lambda: len(got) == 15)
    assert time.monotonic() - t0 < 10  # pushed, not polled

    # The network drops without a close frame; the listener reconnects and resumes.
    first._ws.transport.abort()
    for i in range(15, 30):
        await alice.groups.send(gid, f"m{i}")
    await _until(lambda: len(got) == 30)
    await _until(lambda: connected() and bob.groups.realtime is not first)

    # Stop listening; messages wait on the server; a new listener picks up where we were.
    stop.set()
    await task
    for i in range(30, 40):
        await alice.groups.send(gid, f"m{i}")
    stop, task = start()
    await _until(lambda: len(got) == 40)
    await asyncio.sleep(0.3)  # anything duplicated would show up now
    stop.set()
    await task

    assert [e.message for e in got] == [f"m{i}" for i in range(40)]
    seqs = [e.group_seq for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 40
    assert [(e.sender) for e in got] == [alice.client_id] * 40
    # Acked: nothing is left in bob's queue.
    page = await bob.client.fetch_queue(bob.groups.queue_of(gid))
    assert page.messages == ()


async def test_welcome_and_commits_arrive_over_the_websocket(users):
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    seen: list[GroupEvent] = []
    stop = asyncio.Event()
    task = asyncio.create_task(bob.groups.listen(seen.append, stop=stop))
    await _until(lambda: bob.groups.realtime is not None and bool(bob.groups.realtime.ready))
    await alice.groups.invite(gid, [bob.user_id])  # the Welcome comes over the direct queue
    await _until(lambda: any(e.kind == "joined" for e in seen))
    await alice.groups.update(gid)
    await alice.groups.send(gid, "after the update")
    await _until(lambda: any(e.kind == "message" for e in seen))
    stop.set()
    await task
    assert [e.kind for e in seen] == ["joined", "commit", "message"]
    assert bob.groups.group(gid).epoch_authenticator == alice.groups.group(gid).epoch_authenticator
