"""Realtime delivery over the WebSocket against a real server: group and direct queues, acks,
resume after reconnecting, refusal of bad tokens."""

from __future__ import annotations

import asyncio

import pytest

from roost.client import Realtime, RoostError


async def test_deliveries_arrive_without_polling(users):
    alice, bob = await users.connected_pair()
    q = await alice.create_queue()
    async with Realtime(alice) as rt:
        assert q in rt.ready["queues"]
        first = await rt.receive(timeout=10)  # Bob's acceptance waits in the direct queue
        assert first.queue_id is None
        assert [e.type for e in first.direct_events()] == ["connection_accepted"]
        await bob.enqueue(q, b"live 1")
        await bob.send_direct(alice.user_id, b"direct 1")
        group: list[bytes] = []
        direct: list[bytes | None] = []
        while len(group) + len(direct) < 2:
            d = await rt.receive(timeout=10)
            if d.queue_id is None:
                direct += [e.payload for e in d.direct_events()]
            else:
                assert d.queue_id == q
                group += [m.payload for m in d.messages]
        assert (group, direct) == ([b"live 1"], [b"direct 1"])
        await rt.ack({q: rt.positions[q]}, direct=rt.direct)
    # Acked over the socket: gone from the HTTP view too.
    assert (await alice.fetch_queue(q)).messages == ()
    assert (await alice.fetch_direct()).events == ()


async def test_resume_from_positions(users):
    alice = await users.new("alice")
    q = await alice.create_queue()
    for i in range(3):
        await alice.enqueue(q, f"m{i}".encode())
    async with Realtime(alice, positions={q: 1}) as rt:
        d = await rt.receive(timeout=10)
        assert [m.seq for m in d.messages][0] == 2  # nothing at or before the position
    # Not acked: a fresh connection without positions sees everything still stored.
    async with Realtime(alice) as rt:
        seqs: list[int] = []
        while len(seqs) < 3:
            seqs += [m.seq for m in (await rt.receive(timeout=10)).messages]
        assert seqs == [1, 2, 3]


async def test_bad_tokens_are_refused_before_the_upgrade(users):
    alice = await users.new("alice")
    alice.state.token = "not-a-token"
    alice.state.token_expires_at = 2**40
    with pytest.raises(RoostError) as e:
        await Realtime(alice).connect()
    assert (e.value.status, e.value.code) == (401, "unauthenticated")


async def test_replaced_by_a_newer_connection(users):
    alice = await users.new("alice")
    old = Realtime(alice)
    await old.connect()
    async with Realtime(alice):
        with pytest.raises(Exception) as e:
            await asyncio.wait_for(old.receive(), 10)
        assert getattr(e.value, "close_code", None) == 4409
    await old.close()
