"""Concurrent sends (group commit on PostgreSQL: a batch of sends to any groups shares one
transaction and two statements) still give every message one gap-free group_seq in its group,
deliver each once to every other member in group order, answer a retried message id with its
first position, and refuse a bad send without costing the others theirs."""

from __future__ import annotations

import asyncio

from .delivery_helpers import (
    add_members,
    create_group,
    fetch,
    member,
    post_commit,
    process_all,
    send_raw,
)
from .test_delivery_rules import trio

BURST = 24


async def test_concurrent_sends_keep_group_order_and_idempotence(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    # Every message encrypted first (the sender's ratchet is not concurrency-safe), then all
    # posted at once; each of bob's is posted twice under one message id (a client retry).
    burst = [
        (sender, f"{sender.user.name}-{i}", sender.group.encrypt(f"{i}".encode()))
        for i in range(BURST)
        for sender in (alice, bob)
    ]
    posts = [send_raw(http, s, gid, msg, message_id=mid) for s, mid, msg in burst]
    retries = [send_raw(http, s, gid, msg, message_id=mid) for s, mid, msg in burst if s is bob]
    answers = await asyncio.gather(*posts, *retries)
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers]
    seq_of = {mid: r.json()["group_seq"] for (_, mid, _), r in zip(burst, answers, strict=False)}
    for (_, mid, _), r in zip(
        [b for b in burst if b[0] is bob], answers[len(posts) :], strict=True
    ):
        assert r.json()["group_seq"] == seq_of[mid]  # the retry got the first copy's position
    seqs = sorted(seq_of.values())
    assert seqs == list(range(seqs[0], seqs[0] + len(burst)))  # one position each, no gaps
    # carol gets every message once, in group order; alice gets bob's, bob gets alice's
    got = await fetch(http, carol)
    assert [i.group_seq for i in got] == seqs
    for receiver, sender in ((alice, bob), (bob, alice)):
        items = await fetch(http, receiver)
        assert [i.group_seq for i in items] == sorted(
            seq_of[mid] for s, mid, _ in burst if s is sender
        )


async def test_sends_to_several_groups_at_once_with_refusals_among_them(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    # A second group of alice and bob (new Member objects: one MLS group each).
    alice2, bob2 = await member(http, alice.user), await member(http, bob.user)
    gid2, r = await create_group(http, alice2)
    assert r.status_code == 201, r.text
    assert (await add_members(http, alice2, gid2, [bob2])).status_code == 201
    for m in (bob, carol):
        await process_all(http, m)
    # carol posting group 2's messages (she is not in it; ciphertexts another member made) and
    # a message from before group 1's epoch window are refused amid everyone's good sends.
    stale = carol.group.encrypt(b"epoch 1")
    for _ in range(5):  # epochs move on with self-updates: epoch 1 is now too old
        out = alice.group.commit(force_path=True)
        assert (await post_commit(http, alice, gid, out)).status_code == 201
        alice.group.merge_pending_commit()
    for m in (bob, carol):
        await process_all(http, m)
    # Two rounds: the first batch meets the refusals unwarned (rolled back, written send by
    # send); by the second the DS has seen both groups and writes the refused ones alone.
    for burst in range(2):
        await _mixed_burst(http, burst, gid, gid2, alice, bob, alice2, bob2, carol, stale)


async def _mixed_burst(http, burst, gid, gid2, alice, bob, alice2, bob2, carol, stale) -> None:  # type: ignore[no-untyped-def]
    good = [
        (sender, g, sender.group.encrypt(f"{burst}-{g.hex()[:4]}-{i}".encode()))
        for i in range(BURST)
        for sender, g in ((alice, gid), (bob, gid), (alice2, gid2), (bob2, gid2))
    ]
    bad = [(carol, gid2, alice2.group.encrypt(b"not yours")) for _ in range(3)]
    bad += [(carol, gid, stale)]
    answers = await asyncio.gather(*(send_raw(http, s, g, msg) for s, g, msg in good + bad))
    assert all(r.status_code == 201 for r in answers[: len(good)]), [r.text for r in answers]
    refused = [(r.status_code, r.json()["code"]) for r in answers[len(good) :]]
    assert refused[:3] == [(403, "not_member")] * 3
    assert refused[3] == (409, "epoch_too_old")
    for g in (gid, gid2):
        seqs = sorted(
            r.json()["group_seq"]
            for (_, gg, _), r in zip(good, answers[: len(good)], strict=True)
            if gg == g
        )
        assert seqs == list(range(seqs[0], seqs[0] + 2 * BURST))  # gap-free in each group
    # each receiver gets the other sender's messages of its group, in order, once
    got = [(i.group_seq, alice.group.process(i.body)) for i in await fetch(http, alice)]
    got2 = [(i.group_seq, alice2.group.process(i.body)) for i in await fetch(http, alice2)]
    for items, g in ((got, gid), (got2, gid2)):
        sent_by_bob = [
            r.json()["group_seq"]
            for (s, gg, _), r in zip(good, answers[: len(good)], strict=True)
            if gg == g and s in (bob, bob2)
        ]
        assert [seq for seq, _ in items] == sorted(sent_by_bob)
    assert len({seq for seq, _ in got}) == BURST
