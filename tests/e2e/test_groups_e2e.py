"""MLS groups end to end against a real homeserver process (SQLite and
PostgreSQL): roost clients create, invite, talk, commit, remove and delete through the DS."""

from __future__ import annotations

import asyncio

import pytest

from roost.client import RoostError
from roost.client.group_events import roster_clients
from roost.mls.group import Group
from roost.protocol.queue_item import QueueItem

from .helpers import (
    Member,
    alice_and_bob_in_a_group,
    connect,
    new_member,
    second_member,
    sync_all,
    sync_until,
)


async def _trio(users) -> tuple[Member, Member, Member, Member]:
    """alice (admin), bob with two clients, carol; alice is connected to bob and carol."""
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    bob_phone = await second_member(users, bob)
    carol = await new_member(users, "carol")
    await connect(alice, bob)
    await connect(alice, carol)
    return alice, bob, bob_phone, carol


def _agree(group_id: bytes, *members: Member) -> int:
    states = {
        (m.groups.group(group_id).epoch, m.groups.group(group_id).epoch_authenticator)
        for m in members
    }
    assert len(states) == 1, states
    return next(iter(states))[0]


async def test_three_users_two_clients_talk_and_commit_both_ways(users):
    alice, bob, bob_phone, carol = await _trio(users)
    group = await alice.groups.create()
    gid = group.group_id
    info = await alice.groups.info(gid)
    assert info.roles == {alice.user_id: "admin"} and info.epoch == 0
    await alice.groups.invite(gid, [bob.user_id, carol.user_id])
    await sync_all(bob, bob_phone, carol)
    for m in (bob, bob_phone, carol):
        assert [e.kind for e in m.seen] == ["joined"]
    assert len(group.roster()) == 4
    assert _agree(gid, alice, bob, bob_phone, carol) == 1

    # Messages in every direction, each read by every other client exactly once, in order.
    await alice.groups.send(gid, "hello from alice")
    await bob_phone.groups.send(gid, "bob's phone here")
    await carol.groups.send(gid, "carol too")
    await sync_all(alice, bob, bob_phone, carol)
    assert alice.messages(gid) == [
        (bob_phone.client_id, "bob's phone here"),
        (carol.client_id, "carol too"),
    ]
    assert bob.messages(gid) == [
        (alice.client_id, "hello from alice"),
        (bob_phone.client_id, "bob's phone here"),
        (carol.client_id, "carol too"),
    ]
    assert bob_phone.messages(gid) == [
        (alice.client_id, "hello from alice"),
        (carol.client_id, "carol too"),
    ]

    # Commits in both directions: a non-admin member updates itself, then the admin does.
    await bob_phone.groups.update(gid)
    await sync_all(alice, bob, carol)
    assert _agree(gid, alice, bob, bob_phone, carol) == 2
    await alice.groups.update(gid)
    await sync_all(bob, bob_phone, carol)
    assert _agree(gid, alice, bob, bob_phone, carol) == 3
    await carol.groups.send(gid, "after two commits")
    await sync_all(alice, bob, bob_phone)
    for m in (alice, bob, bob_phone):
        assert m.messages(gid)[-1] == (carol.client_id, "after two commits")

    # The local history holds the conversation, ours included; the group state persists.
    history = [(e.sender, e.text, e.outgoing) for e in bob.groups.history.messages(gid)]
    assert (bob_phone.client_id, "bob's phone here", False) in history
    assert history[-1] == (carol.client_id, "after two commits", False)
    assert [e.text for e in carol.groups.history.messages(gid) if e.outgoing] == [
        "carol too",
        "after two commits",
    ]
    assert {s.group_id for s in await bob_phone.groups.list()} == {gid}


async def test_add_and_remove_with_welcome_removed_member_cannot_read_or_send(users):
    alice, bob, bob_phone, carol = await _trio(users)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await sync_all(bob, bob_phone)
    await alice.groups.send(gid, "before carol")
    # Add carol later: her Welcome arrives in her direct queue, she joins and reads on.
    await alice.groups.invite(gid, [carol.user_id])
    await sync_all(bob, bob_phone, carol)
    assert [e.kind for e in carol.seen] == ["joined"]
    await bob.groups.send(gid, "welcome carol")
    await sync_all(carol, alice)
    assert carol.messages(gid) == [(bob.client_id, "welcome carol")]  # nothing from before
    _agree(gid, alice, bob, bob_phone, carol)

    # Remove carol: the others move on. She may learn of it from the removing commit (then
    # she forgets the group) but gets nothing after it; keep a copy of her last state to show
    # that even her keys cannot read what follows.
    carol_keys = Group.from_bytes(carol.groups.group(gid).to_bytes())
    event = await alice.groups.remove(gid, carol.user_id)
    assert event.removed == (carol.client_id,)
    await sync_all(bob, bob_phone, carol)
    assert [e.kind for e in carol.seen if e.kind != "message"] in (
        ["joined"],
        ["joined", "removed"],
    )
    sent = await alice.groups.send(gid, "carol is gone")
    assert await carol.sync() == []  # nothing after the removal reaches her queue
    with pytest.raises(Exception):  # noqa: B017 - any MLS rejection
        carol_keys.process(sent.ciphertext)
    # ... and the DS refuses her sends (a well-formed message of her last epoch).
    with pytest.raises(RoostError) as e:
        await carol.groups.send_raw(gid, carol_keys.encrypt(b"let me in"))
    assert (e.value.status, e.value.code) == (403, "not_member")
    await sync_all(bob, bob_phone)
    assert bob_phone.messages(gid)[-1] == (alice.client_id, "carol is gone")
    assert "let me in" not in [t for _, t in bob.messages(gid)]


async def test_idempotent_resend(users):
    alice, bob, gid = await alice_and_bob_in_a_group(users)
    await bob.groups.set_policy(gid, "mentions")
    first = await alice.groups.send(gid, "only once", message_id="m-1")
    again = await alice.groups.send_raw(gid, first.ciphertext, message_id="m-1")
    assert again.group_seq == first.group_seq
    await bob.sync()
    assert bob.messages(gid) == [(alice.client_id, "only once")]
    assert [e.policy for e in bob.seen if e.kind == "message"] == ["mentions"]


async def test_non_member_sends_and_role_violations_are_rejected(users):
    alice, bob, _phone, carol = await _trio(users)
    await connect(bob, carol)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await bob.sync()

    # carol is no member: she cannot send (even a well-formed message) nor read state —
    # without the group's key, nor with it (leaked to her).
    stolen = bob.groups.group(gid).encrypt(b"forged by carol")
    bob.groups._keep(bob.groups.group(gid))
    with pytest.raises(RoostError) as e:
        await carol.groups.send_raw(gid, stolen, message_id="x")
    assert (e.value.status, e.value.code) == (403, "group_key_required")
    carol.groups.store.set_group_key(gid, alice.groups.group_key(gid))
    with pytest.raises(RoostError) as e:
        await carol.groups.send_raw(gid, stolen, message_id="x")
    assert (e.value.status, e.value.code) == (403, "not_member")
    with pytest.raises(RoostError) as e:
        await carol.groups.info(gid)
    assert e.value.status in (403, 404)

    # bob is a plain member: no adds, no removing others, no role changes.
    epoch = bob.groups.group(gid).epoch
    for attempt in (
        bob.groups.invite(gid, [carol.user_id], retries=0),
        bob.groups.remove(gid, alice.user_id, retries=0),
    ):
        with pytest.raises(RoostError) as e:
            await attempt
        assert (e.value.status, e.value.code) == (403, "role_required")
    with pytest.raises(RoostError) as e:
        await bob.groups.promote(gid, bob.user_id)
    assert e.value.status == 403
    assert bob.groups.group(gid).epoch == epoch  # nothing was merged
    assert (await alice.groups.info(gid)).roles == {alice.user_id: "admin"}

    # Once promoted, bob may add carol (they are connected).
    await alice.groups.promote(gid, bob.user_id)
    await alice.sync()
    await bob.groups.invite(gid, [carol.user_id])
    await carol.sync()
    await alice.sync()
    _agree(gid, alice, bob, carol)


async def test_fifty_clients_race_one_epoch_exactly_one_wins_no_fork(users):
    admin = await new_member(users, "admin", keypackages=1)
    others = await asyncio.gather(*(new_member(users, f"r{i}", keypackages=1) for i in range(49)))
    for m in others:
        await connect(admin, m)
    gid = (await admin.groups.create()).group_id
    await admin.groups.invite(gid, [m.user_id for m in others])
    await asyncio.gather(*(m.sync() for m in others))
    everyone = [admin, *others]
    epoch = _agree(gid, *everyone)
    assert len(admin.groups.group(gid).roster()) == 50

    # Every member self-updates at once. Each first catches up with its queue, so one that
    # catches up after a winner's commit builds on the next epoch: one winner per epoch.
    results = await asyncio.gather(
        *(m.groups.update(gid, retries=0) for m in everyone), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    won = sorted(w.epoch for w in winners)
    assert won == list(range(epoch + 1, epoch + 1 + len(winners))), results
    assert losers, results
    assert all(isinstance(r, RoostError) and r.code == "epoch_conflict" for r in losers), losers
    assert {r.problem.get("epoch") for r in losers} <= set(range(epoch, won[-1] + 1))
    await asyncio.gather(*(m.sync() for m in everyone))
    assert _agree(gid, *everyone) == won[-1]  # the group did not fork
    # And it still works: a loser retries and wins the next epoch.
    loser = everyone[[isinstance(r, BaseException) for r in results].index(True)]
    await loser.groups.update(gid)
    await asyncio.gather(*(m.sync() for m in everyone if m is not loser))
    assert _agree(gid, *everyone) == won[-1] + 1


async def test_group_deletion_tells_members_with_a_verified_notice(users):
    alice, bob, gid = await alice_and_bob_in_a_group(users)
    with pytest.raises(RoostError) as e:
        await bob.groups.delete(gid)
    assert e.value.status == 403
    await alice.groups.delete(gid)
    [notice] = [e for e in await bob.sync() if e.kind == "notice"]
    assert notice.notice["type"] == "group_deleted" and notice.group_id == gid
    assert gid not in bob.groups.local_group_ids()
    with pytest.raises(RoostError) as e:
        await alice.groups.info(gid)
    assert (e.value.status, e.value.code) == (404, "group_not_found")


async def test_display_name_and_account_deletion_notices_and_server_removes(users):
    alice, bob, bob_phone, carol = await _trio(users)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id, carol.user_id])
    await sync_all(bob, bob_phone, carol)

    await bob.client.set_display_name("Robert")
    notice = await sync_until(carol, lambda e: e.kind == "notice")
    assert notice.notice["type"] == "display_name_changed"
    assert (notice.notice["user_id"], notice.notice["display_name"]) == (bob.user_id, "Robert")

    await carol.client.delete_account()
    gone = await sync_until(
        alice, lambda e: e.kind == "notice" and e.notice["type"] == "user_deleted"
    )
    assert (gone.notice["type"], gone.notice["user_id"]) == ("user_deleted", carol.user_id)
    # The homeserver proposed carol's removal as external sender; a member commits it.
    if not alice.groups.group(gid).pending_proposal_refs():
        await sync_until(alice, lambda e: e.kind == "proposal")
    event = await alice.groups.commit(gid)
    assert event.removed == (carol.client_id,)
    await sync_all(bob, bob_phone)
    _agree(gid, alice, bob, bob_phone)
    assert len(alice.groups.group(gid).roster()) == 3


async def test_every_member_auto_commits_a_leave_and_server_removes_without_forking(users):
    alice, bob, bob_phone, carol = await _trio(users)
    dave = await new_member(users, "dave")
    await connect(alice, dave)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id, carol.user_id, dave.user_id])
    await sync_all(bob, bob_phone, carol, dave)
    members = [alice, bob, bob_phone, dave]

    # carol leaves (a Remove proposal for herself): everyone tries to commit it at once.
    await carol.groups.leave(gid)
    epoch = alice.groups.group(gid).epoch
    results = await asyncio.gather(*(m.groups.sync(auto_commit=True) for m in members))
    commits = [e for events in results for e in events if e.kind == "commit" and e.removed]
    await sync_all(*members)
    assert _agree(gid, *members) == epoch + 1
    assert len(alice.groups.group(gid).roster()) == 4
    assert len({c.epoch for c in commits}) <= 1

    # dave deletes his account: the homeserver's Remove proposal is committed the same way.
    members.remove(dave)
    await dave.client.delete_account()
    for _ in range(100):
        await asyncio.gather(*(m.groups.sync(auto_commit=True) for m in members))
        if all(len(m.groups.group(gid).roster()) == 3 for m in members):
            break
        await asyncio.sleep(0.1)
    await sync_all(*members)
    assert _agree(gid, *members) == epoch + 2


async def test_a_leave_outlives_a_commit_that_left_it_out(users):
    """carol leaves, but alice commits from a state that has not seen carol's proposal yet:
    the proposal dies with its epoch. carol has forgotten the group and cannot propose again,
    so the homeserver does (as for a deleted account): the next member commit removes her,
    and nothing more is delivered to her leaf meanwhile."""
    from roost.client.groups import group_path
    from roost.protocol.commit_bundle import encode_commit_bundle
    from roost.protocol.media_types import MLS_MEDIA_TYPE

    alice, bob, _, carol = await _trio(users)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id, carol.user_id])
    await sync_all(bob, carol)
    left_at = await carol.groups.leave(gid)

    group = alice.groups.group(gid)  # alice has not read the proposal
    out = group.commit(force_path=True)
    await alice.client.request(
        "POST",
        f"/v1/groups/{group_path(gid)}/commits",
        content=encode_commit_bundle(out.commit, out.group_info, None),
        content_type=MLS_MEDIA_TYPE,
        headers=alice.groups.key_headers(gid),
    )
    group.merge_pending_commit()
    alice.groups.store.keep(group)
    assert carol.client_id in roster_clients(alice.groups.group(gid)).values()
    await alice.groups.send(gid, "after carol left")

    for _ in range(100):
        await asyncio.gather(*(m.groups.sync(auto_commit=True) for m in (alice, bob)))
        if carol.client_id not in roster_clients(alice.groups.group(gid)).values():
            break
        await asyncio.sleep(0.1)
    await sync_all(alice, bob)
    _agree(gid, alice, bob)
    assert carol.client_id not in roster_clients(bob.groups.group(gid)).values()
    with pytest.raises(RoostError) as refused:
        await carol.groups.info(gid)
    assert refused.value.code == "not_member"
    # Her own proposal came back as the last item for her; nothing after her leave did.
    queue = await carol.client.fetch_queue(carol.groups.queue_of(gid), 0)
    assert [QueueItem.decode(m.payload).group_seq for m in queue.messages] == [left_at]


async def test_a_leaving_client_reads_what_was_sent_before_its_leave(users):
    """carol leaves before she has read bob's last message: she still reads it (it was sent
    while she was a member), and forgets the group once her own leave proposal comes back."""
    alice, bob, _, carol = await _trio(users)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id, carol.user_id])
    await sync_all(bob, carol)
    sent = await bob.groups.send(gid, "before carol left")

    await carol.groups.leave(gid)
    assert gid not in carol.groups.local_group_ids()  # gone for her at once
    with pytest.raises(RoostError) as refused:
        await carol.groups.send(gid, "after leaving")
    assert refused.value.code == "unknown_group"

    events = await carol.groups.sync()
    got = [(e.kind, e.group_seq, e.message) for e in events if e.group_id == gid]
    assert got == [("message", sent.group_seq, "before carol left")], events
    assert not carol.groups.store.holds(gid)  # her proposal came back: state dropped
    assert "before carol left" in [e.text for e in carol.groups.history.messages(gid)]

    await asyncio.gather(*(m.groups.sync(auto_commit=True) for m in (alice, bob)))
    await alice.groups.send(gid, "after carol left")
    await sync_all(alice, bob)
    assert _agree(gid, alice, bob)
    assert await carol.groups.sync() == []


async def test_state_history_and_cursors_survive_a_restart(users, tmp_path):
    from roost.client import Home, RoostClient
    from roost.client.groups import Groups

    from .helpers import member

    alice = await new_member(users, "alice")
    bob = member(await users.new("bob", keypackages=2, home=Home(tmp_path / "bob")))
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await alice.groups.send(gid, "one")
    await bob.sync()
    await bob.groups.send(gid, "two")
    await bob.client.aclose()

    # A new process: the client, its group state, queue cursor and history come from the home.
    await alice.groups.send(gid, "three")
    again = users.track(RoostClient.open(tmp_path / "bob"))
    groups = Groups(again)
    assert groups.local_group_ids() == [gid]
    events = await groups.sync()
    assert [(e.kind, e.message) for e in events] == [("message", "three")]
    assert [(e.text, e.outgoing) for e in groups.history.messages(gid)] == [
        ("one", False),
        ("two", True),
        ("three", False),
    ]
    await groups.send(gid, "four")
    await alice.sync()
    assert alice.messages(gid)[-2:] == [(bob.client_id, "two"), (bob.client_id, "four")]


async def test_a_client_receives_while_its_own_send_is_in_flight(users):
    """The group lock covers encryption, not the round trip: a client's receiving does not wait
    behind its own sends (a send held on the wire here until the same client has synced)."""
    alice, bob, gid = await alice_and_bob_in_a_group(users)
    await bob.groups.send(gid, "from bob")

    synced = asyncio.Event()
    real_request = alice.client.request

    async def request(method, path, **kwargs):  # the real request, started late
        if method == "POST" and path.endswith("/messages"):
            await synced.wait()
        return await real_request(method, path, **kwargs)

    alice.client.request = request
    sending = asyncio.create_task(alice.groups.send(gid, "from alice"))
    for _ in range(5):
        await asyncio.sleep(0)  # the send encrypts and goes on the wire
    await asyncio.wait_for(alice.sync(), 10)
    synced.set()
    await asyncio.wait_for(sending, 10)
    assert alice.messages(gid) == [(bob.client_id, "from bob")]
    await bob.sync()
    assert bob.messages(gid)[-1] == (alice.client_id, "from alice")


async def test_auto_commit_commits_proposals_a_listener_received(users):
    """alice's listener (which does not commit) reads carol's leave; alice's next
    ``sync(auto_commit=True)`` brings nothing new, yet commits the leave still pending."""
    alice, bob, _, carol = await _trio(users)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id, carol.user_id])
    await sync_all(bob, carol)
    seen: list = []
    stop = asyncio.Event()
    listener = asyncio.create_task(alice.groups.listen(seen.append, stop=stop))
    try:
        await carol.groups.leave(gid)
        for _ in range(100):
            if any(e.kind == "proposal" for e in seen):
                break
            await asyncio.sleep(0.1)
        assert [e.kind for e in seen] == ["proposal"], seen
    finally:
        stop.set()
        await asyncio.wait_for(listener, 30)
    events = await alice.groups.sync(auto_commit=True)
    assert [e.kind for e in events] == ["commit"], events
    assert carol.client_id not in roster_clients(alice.groups.group(gid)).values()
    await sync_all(bob)
    assert _agree(gid, alice, bob)


async def test_a_client_that_joins_again_while_leaving_keeps_the_new_membership(users):
    """carol leaves; the others commit it; she joins the group again by external commit
    before her own leave proposal has come back to her: she holds the group again, and the
    proposal arriving afterwards (an item of her old membership) does not take the new
    membership away."""
    alice, bob, _, carol = await _trio(users)
    gid = (await alice.groups.create(external_join=True)).group_id
    await alice.groups.invite(gid, [bob.user_id, carol.user_id])
    await sync_all(bob, carol)
    await carol.groups.leave(gid)
    assert gid not in carol.groups.local_group_ids()
    await asyncio.gather(*(m.groups.sync(auto_commit=True) for m in (alice, bob)))
    await sync_all(alice, bob)
    assert carol.client_id not in roster_clients(alice.groups.group(gid)).values()

    await carol.groups.join_external(gid)
    assert gid in carol.groups.local_group_ids()
    await sync_all(alice, bob)
    await alice.groups.send(gid, "after carol came back")
    await sync_until(carol, lambda e: e.kind == "message" and e.message == "after carol came back")
    assert gid in carol.groups.local_group_ids()
    await sync_all(alice, bob, carol)
    assert _agree(gid, alice, bob, carol)
