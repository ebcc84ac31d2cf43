"""Group traffic through the Delivery Service arrives over the realtime WebSocket: the Welcome
(direct queue), then commits and application messages in the group's one order, both ways."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from roost.client.groups import GroupEvent
from tests.e2e.helpers import Member, connect, new_member

pytestmark = pytest.mark.timeout(120)


async def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Listening:
    """``Groups.listen`` over the socket in the background, collecting events."""

    def __init__(self, m: Member) -> None:
        self.m = m
        self.events: list[GroupEvent] = []
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(m.groups.listen(self.events.append, stop=self.stop))

    def of(self, group_id: bytes, *kinds: str) -> list[GroupEvent]:
        return [e for e in self.events if e.group_id == group_id and e.kind in kinds]

    async def aclose(self) -> None:
        self.stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, 10)


async def test_group_messages_and_commits_arrive_over_the_socket_in_group_order(users):
    alice = await new_member(users, "a")
    bob = await new_member(users, "b")
    await connect(alice, bob)
    group = await alice.groups.create()
    gid = group.group_id
    bob_rt, alice_rt = Listening(bob), Listening(alice)
    try:
        await wait_until(lambda: bob.groups.realtime is not None)
        await alice.groups.invite(gid, [bob.user_id])
        # The Welcome reaches Bob's direct queue over the socket; he joins without polling.
        await wait_until(lambda: bool(bob_rt.of(gid, "joined")))

        t0 = time.monotonic()
        for i in range(3):
            await alice.groups.send(gid, f"hello {i}", message_id=f"a{i}")
        await alice.groups.update(gid)
        for i in range(3, 5):
            await alice.groups.send(gid, f"hello {i}", message_id=f"a{i}")
        await wait_until(lambda: len(bob_rt.of(gid, "message")) == 5)
        assert time.monotonic() - t0 < 10
        seen = bob_rt.of(gid, "message", "commit")
        assert [e.kind for e in seen] == ["message"] * 3 + ["commit"] + ["message"] * 2
        assert [e.message for e in seen if e.kind == "message"] == [f"hello {i}" for i in range(5)]
        seqs = [e.group_seq for e in seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # one group-wide order

        # And back: Bob's reply reaches Alice's socket.
        await bob.groups.send(gid, "hi alice", message_id="b0")
        await wait_until(lambda: bool(alice_rt.of(gid, "message")))
        [reply] = alice_rt.of(gid, "message")
        assert reply.message == "hi alice" and reply.sender == bob.client_id
    finally:
        await bob_rt.aclose()
        await alice_rt.aclose()


async def test_a_message_names_its_sender_after_the_roster_changed(users):
    """A receiver names each message's sender by leaf; after carol is removed and dave takes
    her leaf, dave's message names dave (the receiver's names follow the epoch)."""
    alice = await new_member(users, "a")
    bob = await new_member(users, "b")
    carol = await new_member(users, "c")
    dave = await new_member(users, "d")
    for other in (bob, carol, dave):
        await connect(alice, other)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id, carol.user_id])
    await bob.groups.sync()
    await carol.groups.sync()
    carol_leaf = carol.groups.group(gid).leaf_index
    await carol.groups.send(gid, "from carol")
    await alice.groups.remove(gid, carol.user_id)
    await alice.groups.invite(gid, [dave.user_id])
    await dave.groups.sync()
    assert dave.groups.group(gid).leaf_index == carol_leaf  # the blank leaf is filled again
    await dave.groups.send(gid, "from dave")
    got = [e for e in await bob.groups.sync() if e.kind == "message"]
    assert [(e.message, e.sender) for e in got] == [
        ("from carol", carol.client_id),
        ("from dave", dave.client_id),
    ]
