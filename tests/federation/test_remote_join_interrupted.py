"""A remote member's join that took effect at the group's DS while its client saw a passing
failure: bob@b.test registers his queue for a.test's group (the DS releases what it held for
his leaf into his queue on b.test), but the answer is lost, and his retry meets a.test down.
What arrived for the group before the Welcome's retry succeeds must wait for it, not be read
as "a message for a group we are not in" and thrown away."""

from __future__ import annotations

import asyncio
import time

from roost.client.groups import group_path

from ..e2e.helpers import sync_until
from .harness import Federation
from .test_ds_flows import TIMEOUT, A, connect, message, new


async def test_items_released_by_an_interrupted_join_wait_for_the_welcome(fed: Federation):
    alice, bob = await new(fed, A, "alice"), await new(fed, "b.test", "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await alice.groups.send(gid, "before you joined")  # held at a.test for bob's new leaf

    # bob's first join attempt registers his queue at the DS; its answer never reaches him.
    # (A join has the group's key from its Welcome; here it is the group's, from alice.)
    queue = await bob.groups._sync.new_queue(gid)  # the membership's queue, as a join makes
    await bob.client.request(
        "PUT",
        f"/v1/groups/{group_path(gid)}/queue",
        json={"queue_id": queue.id},
        headers={**queue.headers, **alice.groups.key_headers(gid)},
    )
    deadline = time.monotonic() + TIMEOUT
    while not (await bob.client.fetch_queue(queue, 0)).messages:  # released to b.test
        assert time.monotonic() < deadline, "the held message never reached bob's queue"
        await asyncio.sleep(0.2)

    # His retry meets the group's DS down: the Welcome waits, and so must the message.
    fed.stop(A)
    try:
        events = await bob.sync()
        assert not [e for e in events if e.kind in ("joined", "welcome_failed")], events
    finally:
        fed.start(A)
    await sync_until(bob, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    if (alice.user_id, "before you joined") not in [
        (s.partition("/")[0], t) for s, t in bob.messages(gid)
    ]:
        await message(bob, gid, "before you joined")  # not in the sync that joined: later
    assert not [e for e in bob.seen if e.kind == "rejected"], bob.seen

    # And the group goes on for him as for anyone.
    await alice.groups.update(gid)
    await sync_until(bob, lambda e: e.kind == "commit" and e.group_id == gid, TIMEOUT)
    assert bob.groups.group(gid).epoch_authenticator == alice.groups.group(gid).epoch_authenticator


async def test_a_stale_state_does_not_read_the_new_membership_before_its_welcome(
    fed: Federation,
):
    """The same for a member removed while away and added again: bob still holds the group
    at the epoch he last saw (a removed client is not sent the removing commit). What his new
    leaf's registration released belongs to the new membership: it waits for the Welcome
    instead of being read on the stale state (which would look like missed commits and
    start a resync)."""
    alice, bob = await new(fed, A, "alice"), await new(fed, "b.test", "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await sync_until(bob, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    stale_epoch = bob.groups.group(gid).epoch

    await alice.groups.remove(gid, bob.user_id)  # bob is away
    await alice.groups.invite(gid, [bob.user_id])
    await alice.groups.send(gid, "after you were added again")  # held for bob's new leaf

    queue = await bob.groups._sync.new_queue(gid)  # the membership's queue, as a join makes
    await bob.client.request(
        "PUT",
        f"/v1/groups/{group_path(gid)}/queue",
        json={"queue_id": queue.id},
        headers={**queue.headers, **bob.groups.key_headers(gid)},  # he holds it from before
    )
    deadline = time.monotonic() + TIMEOUT
    while not [m for m in (await bob.client.fetch_queue(queue, 0)).messages]:
        assert time.monotonic() < deadline, "the held message never reached bob's queue"
        await asyncio.sleep(0.2)

    fed.stop(A)
    try:
        events = await bob.sync()
        assert events == [], events  # nothing read on the stale state, no rejoin tried
        assert bob.groups.group(gid).epoch == stale_epoch
    finally:
        fed.start(A)
    await sync_until(
        bob, lambda e: e.kind == "joined" and e.group_id == gid and e.epoch > stale_epoch, TIMEOUT
    )
    if (alice.user_id, "after you were added again") not in [
        (s.partition("/")[0], t) for s, t in bob.messages(gid)
    ]:
        await message(bob, gid, "after you were added again")
    assert not [e for e in bob.seen if e.kind in ("rejected", "resynced")], bob.seen
    assert bob.groups.group(gid).epoch_authenticator == alice.groups.group(gid).epoch_authenticator
