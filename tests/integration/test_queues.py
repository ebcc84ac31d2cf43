"""Direct queues (per user, AS) and group-message queues (authorised by their key, QS): fetch
and ack. The raw-HTTP checks of queue keys are in test_queue_keys.py."""

from __future__ import annotations

import pytest

from roost.client import RoostError


async def test_direct_queue_fetch_and_ack(users):
    alice, bob = await users.connected_pair()
    for i in range(4):
        await alice.send_direct(bob.user_id, f"m{i}".encode())
    first = await bob.fetch_direct()
    # the request, bob's own answer (for his other clients), then the messages
    kinds = ["connection_request", "connection_accepted"] + ["message"] * 4
    assert [e.type for e in first.events] == kinds
    seqs = [e.seq for e in first.events]
    assert seqs == list(range(seqs[0], seqs[0] + 6))  # gap-free
    assert first.last_seq == seqs[-1] and not first.has_more
    assert (await bob.fetch_direct()).events == first.events  # at-least-once until acked
    page = await bob.fetch_direct(limit=2)
    assert [e.seq for e in page.events] == seqs[:2] and page.has_more
    after = await bob.fetch_direct(seqs[2])
    assert [e.payload for e in after.events] == [b"m1", b"m2", b"m3"]
    await bob.ack_direct(seqs[3])
    assert [e.seq for e in (await bob.fetch_direct()).events] == seqs[4:]


async def test_direct_queue_acks_are_per_client(users):
    alice, bob = await users.connected_pair()
    phone = await users.second_client(bob)
    await alice.send_direct(bob.user_id, b"for both devices")
    seq = (await bob.fetch_direct()).last_seq
    await bob.ack_direct(seq)
    assert (await bob.fetch_direct(seq)).events == ()
    # The phone has not acked: the message stays for it (each client has its own cursor).
    assert [e.payload for e in (await phone.fetch_direct()).events][-1] == b"for both devices"
    await phone.ack_direct(seq)
    # Acked by every client of the user: deleted.
    assert (await phone.fetch_direct()).events == ()
    assert (await bob.fetch_direct()).events == ()


async def test_group_queue_fetch_ack_and_caps(users):
    alice = await users.new("alice")
    q = await alice.create_queue()
    seqs = [await alice.enqueue(q, bytes([i]) * 1000) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    r = await alice.fetch_queue(q, limit=2)
    assert [m.seq for m in r.messages] == [1, 2] and r.has_more and r.last_seq == 2
    r = await alice.fetch_queue(q, 2)
    assert [m.seq for m in r.messages] == [3, 4, 5] and not r.has_more
    assert r.messages[0].payload == b"\x02" * 1000
    r = await alice.fetch_queue(q, max_bytes=2500)
    assert 1 <= len(r.messages) <= 2 and r.has_more
    r = await alice.fetch_queue(q, max_bytes=10)  # at least one message always comes
    assert [m.seq for m in r.messages] == [1] and r.has_more
    await alice.ack_queue(q, 3)
    assert [m.seq for m in (await alice.fetch_queue(q)).messages] == [4, 5]
    empty = await alice.fetch_queue(q, 5)
    assert empty.messages == () and empty.last_seq == 5 and not empty.has_more
    assert await alice.enqueue(q, b"next") == 6  # numbering goes on after acks


async def test_group_queue_idempotent_enqueue(users):
    alice = await users.new("alice")
    q = await alice.create_queue()
    s1 = await alice.enqueue(q, b"once", message_id="msg-1")
    s2 = await alice.enqueue(q, b"once", message_id="msg-1")
    assert s1 == s2
    assert [m.payload for m in (await alice.fetch_queue(q)).messages] == [b"once"]


async def test_only_the_owner_fetches_and_acks(users):
    alice = await users.new("alice")
    mallory = await users.new("mallory")
    phone = await users.second_client(alice)
    q = await alice.create_queue()
    await mallory.enqueue(q, b"anyone holding the id may enqueue")
    # The key stays with the client that made the queue: not even the user's other client
    # holds it.
    for intruder in (mallory, phone):
        with pytest.raises(RoostError) as e:
            await intruder.fetch_queue(q)
        assert (e.value.status, e.value.code) == (403, "forbidden")
        with pytest.raises(RoostError) as e:
            await intruder.ack_queue(q, 1)
        assert (e.value.status, e.value.code) == (403, "forbidden")
        with pytest.raises(RoostError) as e:
            await intruder.delete_queue(q)
        assert (e.value.status, e.value.code) == (403, "forbidden")
    assert len((await alice.fetch_queue(q)).messages) == 1


async def test_deleted_queue_is_gone(users):
    alice = await users.new("alice")
    q = await alice.create_queue()
    await alice.enqueue(q, b"x")
    await alice.delete_queue(q)
    for call in (alice.fetch_queue(q), alice.enqueue(q, b"y"), alice.ack_queue(q, 1)):
        with pytest.raises(RoostError) as e:
            await call
        assert (e.value.status, e.value.code) == (404, "queue_not_found")
