"""What happens to a group's items for a domain that cannot take them now (docs/federation.md,
"Blocked, unreachable, forgotten"). Two real homeserver processes (a.test hosts the group,
carol is on b.test), driven through ``roost.client`` and the operator CLI:

- a.test blocks b.test: the group's items for b.test are held in a.test's outbox (seen as
  BLOCKED in ``roost admin outbox``) and delivered in the group's order after ``unblock``, so
  carol reads every message and commits again;
- b.test down for a while, then back: the same, on the outbox's own timer;
- ``roost admin federation forget b.test``: what was held is discarded, a.test's DS removes
  carol's leaves with server Remove proposals and tells the other members in a signed notice;
  the group goes on without her.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from roost.client import RoostError
from roost.server.config import build_config
from roost.server.federation.tables import fed_destinations
from roost.server.store import Database

from ..e2e.helpers import Member, second_member, sync_until
from .harness import POLICY_CACHE_SECONDS, Federation
from .test_ds_flows import connect, new

A, B = "a.test", "b.test"
TIMEOUT = 60.0  # through outboxes and policy caches, on a loaded machine


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.3)


async def group_of(alice: Member, *others: Member) -> bytes:
    """alice (a.test) creates a group and invites ``others``, who join."""
    gid = (await alice.groups.create()).group_id
    for o in others:
        if not o.user_id.endswith("@" + A):
            await connect(alice, o)
        else:
            conn = await alice.client.open_connection(o.user_id)
            await alice.client.send_connection_request(conn.connection_id, b"hi")
            await o.client.accept_connection(conn.connection_id)
        await alice.groups.invite(gid, [o.user_id])
        await sync_until(o, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    for o in others:  # everyone has processed every invite
        await reaches_epoch(o, gid, alice.groups.group(gid).epoch)
    return gid


def messages(m: Member, gid: bytes) -> list[tuple[int, str]]:
    return [(e.group_seq, e.message) for e in m.seen if e.kind == "message" and e.group_id == gid]


async def reaches_epoch(m: Member, gid: bytes, epoch: int) -> None:
    async def there() -> bool:
        await m.sync()
        return m.groups.group(gid).epoch >= epoch

    await eventually(there, f"{m.user_id} reaches epoch {epoch}")


async def wait_outbox(
    fed: Federation, what: str, probe: Callable[[dict[str, Any] | None], bool]
) -> dict[str, Any] | None:
    """a.test's ``roost admin outbox`` row for b.test, once ``probe`` holds for it."""
    seen: list[dict[str, Any] | None] = []

    async def holds() -> bool:
        seen.append(await asyncio.to_thread(fed[A].outbox_to, B))
        return probe(seen[-1])

    await eventually(holds, what)
    return seen[-1]


def block(fed: Federation) -> None:
    fed.policy(A, "open", block=[B])
    fed.wait_policy()


def unblock(fed: Federation) -> None:
    fed.policy(A, "open")
    fed.wait_policy()


async def test_items_for_a_blocked_domain_are_held_and_delivered_after_unblock(
    fed: Federation,
) -> None:
    alice, carol = await new(fed, A, "alice"), await new(fed, B, "carol")
    gid = await group_of(alice, carol)
    assert alice.groups.group(gid).epoch == 1
    block(fed)
    try:
        update = await alice.groups.update(gid)  # a self-update: epoch 2
        assert update.epoch == 2
        sent = await alice.groups.send(gid, "after the update")
        # The commit and the message wait in a.test's outbox, and the operator sees them.
        row = await wait_outbox(fed, "held items for b.test", lambda r: bool(r and r["depth"]))
        assert row is not None and row["blocked"] and row["state"] == "blocked", row
        assert row["depth"] >= 2, row
        listing = fed[A].admin("outbox").stdout
        line = next(x for x in listing.splitlines() if B in x)
        assert "BLOCKED" in line and "held" in line, line
    finally:
        unblock(fed)
    got = await sync_until(
        carol, lambda e: e.kind == "message" and e.message == "after the update", TIMEOUT
    )
    assert got.group_seq == sent.group_seq
    assert carol.groups.group(gid).epoch == 2
    # carol takes part again: her commit reaches alice, and the new epoch's keys work.
    assert (await carol.groups.update(gid)).epoch == 3
    await reaches_epoch(alice, gid, 3)
    await alice.groups.send(gid, "epoch 3")
    await sync_until(carol, lambda e: e.kind == "message" and e.message == "epoch 3", TIMEOUT)
    await wait_outbox(fed, "a.test's outbox for b.test drains", lambda r: r is None)


async def test_held_items_are_delivered_in_the_groups_order(fed: Federation) -> None:
    alice, carol = await new(fed, A, "alice"), await new(fed, B, "carol")
    gid = await group_of(alice, carol)
    block(fed)
    try:
        # Messages and commits, interleaved: carol can only read each message if she gets
        # everything, in order (a message of epoch n needs the commits before it).
        texts = []
        for i in range(6):
            if i % 2:
                await alice.groups.update(gid)
            texts.append(f"held {i}")
            await alice.groups.send(gid, texts[-1])
        epoch = alice.groups.group(gid).epoch
        assert epoch == 4
        await wait_outbox(fed, "all of it held", lambda r: bool(r and r["depth"] >= 9))
    finally:
        unblock(fed)
    await reaches_epoch(carol, gid, epoch)

    async def all_read() -> bool:
        await carol.sync()
        return len(messages(carol, gid)) >= len(texts)

    await eventually(all_read, "carol reads every held message")
    got = messages(carol, gid)
    assert [t for _, t in got] == texts
    assert [s for s, _ in got] == sorted(s for s, _ in got)
    assert not [e for e in carol.seen if e.kind in ("rejected", "error")], carol.seen


async def test_unreachable_domain_gets_its_items_when_back(fed: Federation) -> None:
    alice, carol = await new(fed, A, "alice"), await new(fed, B, "carol")
    gid = await group_of(alice, carol)
    fed.stop(B)
    try:
        await alice.groups.update(gid)
        await alice.groups.send(gid, "while b.test was down")
        row = await wait_outbox(
            fed, "a.test retries b.test", lambda r: bool(r and r["attempts"] >= 1)
        )
        assert row is not None and row["state"] == "unreachable" and not row["blocked"], row
        assert row["depth"] >= 2 and row["next_attempt_in_seconds"] is not None, row
        listing = fed[A].admin("outbox").stdout
        assert "UNREACHABLE" in next(x for x in listing.splitlines() if B in x), listing
    finally:
        fed.start(B)
    # On the outbox's own timer (no retry asked for): the commit, then the message.
    got = await sync_until(
        carol, lambda e: e.kind == "message" and e.message == "while b.test was down", 2 * TIMEOUT
    )
    assert got.epoch == 2 == carol.groups.group(gid).epoch
    await wait_outbox(fed, "a.test's outbox for b.test drains", lambda r: r is None)


async def test_forget_removes_the_domains_members_and_the_group_goes_on(fed: Federation) -> None:
    alice, dave = await new(fed, A, "alice"), await new(fed, A, "dave")
    carol = await new(fed, B, "carol")
    carol_phone = await second_member(fed.users(B), carol)
    gid = await group_of(alice, dave, carol)
    assert len(alice.groups.leaves_of(gid, carol.user_id)) == 2  # both of carol's clients
    block(fed)
    try:
        await alice.groups.send(gid, "held for b.test")
        await wait_outbox(fed, "held for b.test", lambda r: bool(r and r["depth"]))
        done = fed[A].admin("federation", "forget", B).stdout
        assert "forgotten" in done and "discarded" in done, done
        # Nothing stays held for b.test, now or later.
        assert fed[A].outbox_to(B) is None

        # a.test's DS tells the members and proposes removing both of carol's leaves.
        for m in (alice, dave):
            got = await sync_until(m, lambda e: e.kind in ("notice", "rejected"), TIMEOUT)
            assert got.kind == "notice", got  # verified against a.test's external sender
            assert got.notice["type"] == "domain_forgotten" and got.notice["domain"] == B
            assert got.notice["user_ids"] == [carol.user_id]

        async def proposed(m: Member) -> bool:
            await m.sync()
            return len(m.groups.group(gid).pending_proposal_refs()) == 2

        await eventually(lambda: proposed(alice), "the server's Remove proposals")
        removal = await alice.groups.commit(gid)
        assert sorted(removal.removed) == sorted([carol.client_id, carol_phone.client_id])
        assert alice.groups.leaves_of(gid, carol.user_id) == []
        await reaches_epoch(dave, gid, removal.epoch)
        assert dave.groups.leaves_of(gid, carol.user_id) == []

        # The rest of the group goes on: messages and commits both ways.
        await alice.groups.send(gid, "without b.test")
        await sync_until(
            dave, lambda e: e.kind == "message" and e.message == "without b.test", TIMEOUT
        )
        update = await dave.groups.update(gid)
        await reaches_epoch(alice, gid, update.epoch)
        await dave.groups.send(gid, "still going")
        await sync_until(
            alice, lambda e: e.kind == "message" and e.message == "still going", TIMEOUT
        )
        await asyncio.sleep(POLICY_CACHE_SECONDS + 1)  # a.test's worker saw the forget too
        assert fed[A].outbox_to(B) is None
        assert "forgotten" in fed[A].admin("federation", "show").stdout
    finally:
        unblock(fed)  # lifts the forget too
    assert "forgotten" not in fed[A].admin("federation", "show").stdout


async def test_a_commit_waits_for_the_items_still_on_their_way(fed: Federation) -> None:
    """carol (b.test) commits while alice's commit and message are still on their way to her
    (a.test's outbox retries b.test, which was down, on its backoff timer): the DS refuses
    her commit (``epoch_conflict`` with the ``commit_seq`` of alice's commit), and her client
    waits for those items, reads the message and commits on top — it does not rejoin, which
    would leave the message unreadable."""
    alice, carol = await new(fed, A, "alice"), await new(fed, B, "carol")
    gid = await group_of(alice, carol)
    fed.stop(B)
    try:
        await alice.groups.update(gid)  # epoch 2
        sent = await alice.groups.send(gid, "on its way")
        await wait_outbox(fed, "a.test retries b.test", lambda r: bool(r and r["attempts"] >= 1))
    finally:
        fed.start(B)
    event = await carol.groups.update(gid)  # before a.test's next attempt brings the items
    assert event.epoch == 3, event
    await carol.sync()
    assert messages(carol, gid) == [(sent.group_seq, "on its way")], carol.seen
    assert not [e for e in carol.seen if e.kind in ("rejected", "resynced")], carol.seen
    await reaches_epoch(alice, gid, 3)
    await carol.groups.send(gid, "epoch 3")
    await sync_until(alice, lambda e: e.kind == "message" and e.message == "epoch 3", TIMEOUT)


async def test_own_commits_wait_for_the_messages_still_on_their_way(fed: Federation) -> None:
    """alice's message is still in a.test's outbox when carol (b.test) commits four times in
    a row. Her client keeps the last three epochs' secrets for late messages; had the DS
    accepted those commits, the message (of her first epoch) would reach her four epochs on,
    unreadable. The DS refuses her commits while items of the group wait for her server
    (``409 items_in_transit``); her client waits for them (up to 10 s) and commits after
    reading the message.

    b.test is down while alice sends, and a.test's delivery lease for b.test is left held as
    by a process killed mid-delivery (it lapses after a minute): the item cannot move when
    b.test is back, so carol's first commit is refused once the wait runs out. Once the lease
    is gone the item arrives, and her commits go through."""
    alice, carol = await new(fed, A, "alice"), await new(fed, B, "carol")
    gid = await group_of(alice, carol)
    epoch = alice.groups.group(gid).epoch
    fed.stop(B)
    try:
        sent = await alice.groups.send(gid, "on its way")
        await wait_outbox(fed, "a.test retries b.test", lambda r: bool(r and r["attempts"] >= 1))
        await set_lease(fed, until_ms=int(time.time() * 1000) + 120_000)
    finally:
        fed.start(B)
    with pytest.raises(RoostError) as refused:
        await carol.groups.update(gid)
    assert refused.value.code == "items_in_transit", refused.value
    assert carol.groups.group(gid).epoch == epoch
    await set_lease(fed, until_ms=0)  # the killed process's lease lapses
    for i in range(1, 5):
        event = await carol.groups.update(gid)
        assert event.epoch == epoch + i, event
    await sync_until(carol, lambda e: e.group_seq == sent.group_seq, TIMEOUT)
    assert messages(carol, gid) == [(sent.group_seq, "on its way")], carol.seen
    assert not [e for e in carol.seen if e.kind in ("rejected", "resynced")], carol.seen


async def set_lease(fed: Federation, until_ms: int) -> None:
    """a.test's delivery lease for b.test, as a process that no longer runs left it."""
    a = fed[A]
    settings = {"data_dir": str(a.data_dir)}
    if a.database_url:
        settings["database_url"] = a.database_url
    db = Database(build_config(settings, {}).sqlalchemy_url)
    try:
        async with db.transaction() as conn:
            await conn.execute(
                sa.update(fed_destinations)
                .where(fed_destinations.c.destination == B)
                .values(lease_owner="killed" if until_ms else None, lease_until_ms=until_ms)
            )
    finally:
        await db.dispose()
