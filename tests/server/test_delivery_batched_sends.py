"""Concurrent sends to one group (group commit on PostgreSQL: a batch shares one transaction and
two statements) still give every message one gap-free group_seq, deliver each once to every
other member in group order, and answer a retried message id with its first position."""

from __future__ import annotations

import asyncio

from .delivery_helpers import fetch, process_all, send_raw
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
