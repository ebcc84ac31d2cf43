"""A Welcome without the ratchet tree for a group of another domain (a.test and b.test, real
processes): the joiner on b.test fetches the tree through its home server from the group's
DS. While that DS is down the Welcome stays unacked and nothing is reported; once it is back
the next sync joins."""

from __future__ import annotations

import asyncio

from roost.client.groups import GroupEvent
from roost.mls.framing import MLSMessage
from roost.mls.welcome import Welcome

from ..e2e.helpers import Member
from .harness import Federation
from .test_scenarios import TIMEOUT, connect, eventually, new, sync_until_count

A, B, C = "a.test", "b.test", "c.test"


async def _welcome_waits(bob: Member) -> bool:
    """A Welcome waits in bob's direct queue past what his client handled."""
    page = await bob.client.fetch_direct(bob.groups.store.cursors.direct_after)
    return any(e.type == "welcome" for e in page.events)


async def _treeless_invite(fed: Federation) -> tuple[Member, Member, bytes]:
    """alice@a.test invites bob@b.test into her new group with a Welcome that leaves the tree
    out; returns (alice, bob, group id) once the Welcome waits in bob's direct queue."""
    alice, bob = await new(fed, A, "alice"), await new(fed, B, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id], ratchet_tree_in_welcome=False)
    await eventually(lambda: _welcome_waits(bob), TIMEOUT, "the Welcome reaches b.test")
    return alice, bob, gid


async def test_tree_fetch_from_a_down_ds_is_retried_then_joins(fed: Federation) -> None:
    alice, bob, gid = await _treeless_invite(fed)
    [event] = [e for e in (await bob.client.fetch_direct(0)).events if e.type == "welcome"]
    assert isinstance(MLSMessage.decode(event.payload or b"").body, Welcome)

    fed.stop(A)
    try:
        assert await bob.sync() == []  # the tree is out of reach: nothing to report yet
        assert bob.groups.store.cursors.direct_after < event.seq  # not acked
        page = await bob.client.fetch_direct(0)
        assert event.seq in [e.seq for e in page.events]
        assert await bob.sync() == []
    finally:
        fed.start(A)

    async def joined() -> bool:
        await bob.sync()
        return any(e.kind == "joined" and e.group_id == gid for e in bob.seen)

    await eventually(joined, TIMEOUT, "bob joins once a.test is back")
    assert [e.kind for e in bob.seen] == ["joined"]
    await alice.groups.send(gid, "hello from a.test")
    await sync_until_count(bob, gid, 1)
    assert bob.messages(gid) == [(alice.client_id, "hello from a.test")]


async def test_listener_retries_a_welcome_whose_ds_is_down(fed: Federation) -> None:
    """The same over the realtime socket: the listener leaves the Welcome (and what follows
    it in the direct queue) unacked, tries again after a growing wait, and joins once the
    group's DS is back — once, with nothing reported before."""
    alice, bob, gid = await _treeless_invite(fed)
    seen: list[GroupEvent] = []
    stop = asyncio.Event()
    fed.stop(A)
    task = asyncio.create_task(bob.groups.listen(seen.append, stop=stop))
    try:

        async def listening() -> bool:
            rt = bob.groups.realtime
            return rt is not None and bool(rt.ready)

        await eventually(listening, TIMEOUT, "bob's listener is connected")
        await asyncio.sleep(2.0)  # pushed and retried meanwhile
        assert seen == []
        assert await _welcome_waits(bob)  # still unacked
        fed.start(A)

        async def joined() -> bool:
            return any(e.kind == "joined" for e in seen)

        await eventually(joined, TIMEOUT * 2, "bob joins once a.test is back")
        await alice.groups.send(gid, "hello listener")

        async def got_message() -> bool:
            return any(e.kind == "message" for e in seen)

        await eventually(got_message, TIMEOUT, "the message reaches bob's listener")
    finally:
        fed.start(A)
        stop.set()
        await task
    assert [(e.kind, e.group_id) for e in seen] == [("joined", gid), ("message", gid)]
    assert seen[1].message == "hello listener"


async def _invite_with_member_of(fed: Federation) -> tuple[Member, Member, bytes]:
    """alice@a.test's group has carol@c.test in it; alice invites bob@b.test (Welcome without
    the tree): joining needs c.test's AS certificate, fetched through b.test. Returns (bob,
    alice, group id) once the Welcome waits in bob's direct queue."""
    alice, bob, carol = (
        await new(fed, A, "alice"),
        await new(fed, B, "bob"),
        await new(fed, C, "carol"),
    )
    await connect(alice, carol)
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [carol.user_id])

    async def carol_joined() -> bool:
        await carol.sync()
        return any(e.kind == "joined" for e in carol.seen)

    await eventually(carol_joined, TIMEOUT, "carol joins")
    await alice.groups.invite(gid, [bob.user_id], ratchet_tree_in_welcome=False)
    await eventually(lambda: _welcome_waits(bob), TIMEOUT, "the Welcome reaches b.test")
    return bob, alice, gid


async def test_welcome_whose_member_domain_is_blocked_waits_then_joins(
    fed_users: Federation,
) -> None:
    """Joining needs the AS certificate of every member's domain. While bob's server blocks
    one (a block is lifted, or ends with a forget), the Welcome stays unacked and nothing is
    reported; once the block is lifted the next sync joins."""
    fed = fed_users
    bob, alice, gid = await _invite_with_member_of(fed)
    try:
        fed.policy(B, "open", block=[C])
        fed.wait_policy()
        assert await bob.sync() == []  # refused for now: nothing to report
        assert await _welcome_waits(bob)  # not acked
    finally:
        fed.policy(B, "open")
        fed.wait_policy()

    async def joined() -> bool:
        await bob.sync()
        return any(e.kind == "joined" and e.group_id == gid for e in bob.seen)

    await eventually(joined, TIMEOUT, "bob joins once the block is lifted")
    await alice.groups.send(gid, "hello after the block")
    await sync_until_count(bob, gid, 1)
    assert bob.messages(gid) == [(alice.client_id, "hello after the block")]


async def test_welcome_whose_member_domain_is_forgotten_is_reported(
    fed_users: Federation,
) -> None:
    """Once bob's server forgets a member's domain (``roost admin federation forget``), the
    Welcome can never be used: bob is told why instead of waiting for ever, and it is acked."""
    fed = fed_users
    bob, _, gid = await _invite_with_member_of(fed)
    try:
        fed[B].admin("federation", "forget", C)
        fed.wait_policy()
        events = await bob.sync()
    finally:
        fed.policy(B, "open")
        fed.wait_policy()
    assert [(e.kind, e.group_id) for e in events] == [("welcome_failed", gid)], events
    assert "AS certificate" in events[0].text and "c.test" in events[0].text, events[0].text
    assert await bob.sync() == []


async def test_tree_fetch_refused_by_a_block_waits_then_joins(fed_users: Federation) -> None:
    """The group's domain blocks the joiner's while the Welcome waits: the tree is refused
    (403 federation_refused) — for now. The Welcome stays unacked and nothing is reported;
    once the block is lifted the next sync joins."""
    fed = fed_users
    alice, bob, gid = await _treeless_invite(fed)
    try:
        fed.policy(A, "open", block=[B])
        fed.wait_policy()
        assert await bob.sync() == []  # refused for now: nothing to report
        assert await _welcome_waits(bob)  # not acked
    finally:
        fed.policy(A, "open")
        fed.wait_policy()

    async def joined() -> bool:
        await bob.sync()
        return any(e.kind == "joined" and e.group_id == gid for e in bob.seen)

    await eventually(joined, TIMEOUT, "bob joins once the block is lifted")
    assert [e.kind for e in bob.seen] == ["joined"]
    await alice.groups.send(gid, "hello after the block")
    await sync_until_count(bob, gid, 1)
    assert bob.messages(gid) == [(alice.client_id, "hello after the block")]


async def test_tree_refused_for_good_is_reported(fed_users: Federation) -> None:
    """Once the group's domain forgets the joiner's (``roost admin federation forget``), the
    refusal says so (``"forgotten": true``): the Welcome can never be used, and bob is told
    why instead of waiting for ever."""
    fed = fed_users
    alice, bob, gid = await _treeless_invite(fed)
    try:
        fed[A].admin("federation", "forget", B)
        fed.wait_policy()
        events = await bob.sync()
    finally:
        fed.policy(A, "open")
        fed.wait_policy()
    assert [(e.kind, e.group_id) for e in events] == [("welcome_failed", gid)], events
    assert "federation_refused" in events[0].text, events[0].text
    assert not await _welcome_waits(bob)  # acked: nothing waits behind it
