"""A sync's events survive a failure of its auto-commit: bob (b.test) syncs with
``auto_commit`` and reads a message and carol's leave, but committing the leave meets the
group's DS (a.test) down. The message was processed and acked: the error must not take its
event with it — the next sync returns it."""

from __future__ import annotations

import asyncio
import time

import pytest

from roost.client import RoostError

from .harness import Federation
from .test_ds_flows import TIMEOUT, A, connect, new


async def test_events_of_a_sync_whose_auto_commit_fails_are_not_lost(fed: Federation):
    alice, bob = await new(fed, A, "alice"), await new(fed, "b.test", "bob")
    carol = await new(fed, A, "carol")
    await connect(alice, bob)
    await connect(alice, carol)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id, carol.user_id])
    deadline = time.monotonic() + TIMEOUT
    while not any(e.kind == "joined" for e in bob.seen):
        assert time.monotonic() < deadline, "bob never joined"
        await bob.sync()
        await asyncio.sleep(0.2)
    await carol.sync()

    await carol.groups.leave(gid)
    await alice.groups.send(gid, "read before the failure")
    queue = bob.groups.queue_of(gid)
    assert queue is not None
    while (
        len((await bob.client.fetch_queue(queue, bob.groups.store.cursors.after(gid))).messages) < 2
    ):
        assert time.monotonic() < deadline, "the items never reached bob's queue"
        await asyncio.sleep(0.2)

    fed.stop(A)
    try:
        with pytest.raises(RoostError) as failed:
            await bob.groups.sync(auto_commit=True)  # reads both, then cannot commit the leave
        assert failed.value.status in (0, 502, 503), failed.value
    finally:
        fed.start(A)
    events = await bob.groups.sync()
    assert [(e.kind, e.message) for e in events if e.kind == "message"] == [
        ("message", "read before the failure")
    ], events
    assert "proposal" in [e.kind for e in events], events
