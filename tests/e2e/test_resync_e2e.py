"""Resync (RFC 9420 §12.4.3.2) end to end against a real homeserver process (SQLite and
PostgreSQL): a member that cannot process a handshake the DS accepted rejoins by an external
commit that removes its own old leaf, and the group converges."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from roost.client import RoostError
from roost.client.group_key import key_headers
from roost.client.group_resync import GroupResync
from roost.client.group_sync import REMOVED_WHILE_OUT_OF_STEP
from roost.client.groups import GroupEvent, group_path
from roost.mls.framing import MLSMessage, PublicMessage
from roost.mls.group import Group
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.media_types import MLS_MEDIA_TYPE

from .helpers import Member, connect, new_member, second_member, sync_all


async def _trio(users) -> tuple[Member, Member, Member, bytes]:
    """alice (admin) with bob and carol in one group (external joins off, the default)."""
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    carol = await new_member(users, "carol")
    await connect(alice, bob)
    await connect(alice, carol)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id, carol.user_id])
    await sync_all(bob, carol)
    return alice, bob, carol, gid


def _agree(group_id: bytes, *members: Member) -> int:
    states = {
        (m.groups.group(group_id).epoch, m.groups.group(group_id).epoch_authenticator)
        for m in members
    }
    assert len(states) == 1, states
    return next(iter(states))[0]


def _flip_membership_tag(commit: bytes) -> bytes:
    """The commit with one byte of its membership_tag flipped (signature still valid)."""
    msg = MLSMessage.decode(commit)
    pm = msg.body
    assert isinstance(pm, PublicMessage) and pm.membership_tag is not None
    tag = bytearray(pm.membership_tag)
    tag[len(tag) // 2] ^= 0x01
    return MLSMessage(replace(pm, membership_tag=bytes(tag))).encode()


async def _corrupted_self_update(m: Member, gid: bytes) -> int:
    """``m`` commits a self-update whose membership tag was corrupted on the way; the DS (not
    in the group) cannot check the tag and accepts it; ``m`` merges it as usual."""
    group = m.groups.group(gid)
    out = group.commit(force_path=True)
    body = encode_commit_bundle(_flip_membership_tag(out.commit), out.group_info, None)
    resp = await m.client.request(
        "POST",
        f"/v1/groups/{group_path(gid)}/commits",
        content=body,
        content_type=MLS_MEDIA_TYPE,
        headers=m.groups.key_headers(gid),
    )
    group.merge_pending_commit()
    m.groups.store.keep(group)
    return int(resp.json()["epoch"])


async def _all_talk(gid: bytes, *members: Member) -> None:
    for m in members:
        await m.groups.send(gid, f"hello from {m.user_id}")
    await sync_all(*members)
    for m in members:
        heard = {text for _, text in m.messages(gid)}
        assert {f"hello from {o.user_id}" for o in members if o is not m} <= heard, m.user_id


async def test_corrupted_membership_tag_heals_by_resync(users):
    alice, bob, carol, gid = await _trio(users)
    assert _agree(gid, alice, bob, carol) == 1
    assert await _corrupted_self_update(alice, gid) == 2

    # bob and carol cannot process it: each rejoins from the DS's GroupInfo on its next sync.
    bob_events = await bob.sync()
    assert "resynced" in [e.kind for e in bob_events], bob_events
    carol_events = await carol.sync()
    assert "resynced" in [e.kind for e in carol_events], carol_events
    # alice sees each rejoin as a commit that says so; bob sees carol's.
    alice_events = await alice.sync()
    rejoined = [e.text for e in alice_events if e.kind == "commit"]
    assert len(rejoined) == 2 and all("rejoined" in t for t in rejoined), rejoined
    assert any(bob.client_id in t for t in rejoined) and any(carol.client_id in t for t in rejoined)
    await bob.sync()
    epoch = _agree(gid, alice, bob, carol)
    assert epoch == 4

    # Everyone can commit again and everyone reads everyone.
    await bob.groups.update(gid)
    await sync_all(alice, carol)
    assert _agree(gid, alice, bob, carol) == epoch + 1
    await _all_talk(gid, alice, bob, carol)
    # Roles and membership as before: one leaf per client.
    assert (await alice.groups.info(gid)).roles == {alice.user_id: "admin"}
    assert len(alice.groups.group(gid).roster()) == 3


async def test_two_members_resync_at_once_converge(users):
    alice, bob, carol, gid = await _trio(users)
    await _corrupted_self_update(alice, gid)
    # Both rejoin concurrently: the DS takes one commit per epoch, the loser fetches the new
    # state and tries again.
    bob_events, carol_events = await asyncio.gather(bob.sync(), carol.sync())
    assert "resynced" in [e.kind for e in bob_events], bob_events
    assert "resynced" in [e.kind for e in carol_events], carol_events
    await sync_all(alice, bob, carol)
    _agree(gid, alice, bob, carol)
    await alice.groups.update(gid)
    await sync_all(bob, carol)
    _agree(gid, alice, bob, carol)
    await _all_talk(gid, alice, bob, carol)


async def test_resync_that_loses_the_epoch_builds_again(users):
    alice, bob, carol, gid = await _trio(users)

    class CarolCommitsFirst(GroupResync):
        """bob's rejoin, with carol's commit landing between his fetch and his post."""

        built = 0

        async def _build(self, path: str, key: dict[str, str]) -> tuple[Group, bytes]:
            out = await super()._build(path, key)
            self.built += 1
            if self.built == 1:
                await carol.groups.update(gid)
            return out

    sync = bob.groups._sync
    racing = CarolCommitsFirst(
        bob.client, bob.groups.store, sync.queue_for_rejoin, sync.adopt, sync.abandon
    )
    bob.groups._sync.resync = racing
    event = await bob.groups.resync(gid)
    assert racing.built == 2  # 409 epoch_conflict, then built again on the new GroupInfo
    assert event.kind == "resynced" and event.epoch == 3
    await sync_all(alice, carol)
    # carol's commit is older than bob's rejoin: reported as unreadable, no second rejoin.
    assert [e.kind for e in await bob.sync()] == ["rejected"]
    assert _agree(gid, alice, bob, carol) == 3
    await _all_talk(gid, alice, bob, carol)


async def test_listen_resyncs_by_itself(users):
    alice, bob, carol, gid = await _trio(users)
    seen: list[GroupEvent] = []
    resynced = asyncio.Event()
    stop = asyncio.Event()

    def on_event(ev: GroupEvent) -> None:
        seen.append(ev)
        if ev.kind == "resynced":
            resynced.set()

    task = asyncio.create_task(bob.groups.listen(on_event, stop=stop))
    try:
        await _corrupted_self_update(alice, gid)
        await asyncio.wait_for(resynced.wait(), timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
    assert [e.kind for e in seen] == ["rejected", "resynced"], seen
    await sync_all(alice, carol)  # carol rejoins too (her sync), after bob
    await sync_all(alice, bob)
    assert _agree(gid, alice, bob, carol) == 4


async def test_state_restored_from_old_copy_resyncs_on_next_sync(users):
    alice, bob, carol, gid = await _trio(users)
    old = bob.groups.group(gid).to_bytes()
    await alice.groups.update(gid)
    await alice.groups.send(gid, "while bob was at epoch 2")
    await sync_all(bob, carol)
    # bob's stored state goes back to an old backup (queue cursor as it is).
    bob.groups.store.keep(Group.from_bytes(old))
    assert bob.groups.group(gid).epoch == 1
    await carol.groups.update(gid)  # something bob cannot read: a later epoch
    await carol.groups.send(gid, "from epoch 3")
    events = await bob.sync()
    kinds = [e.kind for e in events]
    assert "resynced" in kinds, events
    # What he missed is said honestly, not silently dropped.
    assert any(e.kind == "rejected" and "could not be read" in e.text for e in events), events
    await sync_all(alice, carol)
    _agree(gid, alice, bob, carol)
    await _all_talk(gid, alice, bob, carol)


async def test_commit_from_stale_state_resyncs_first(users):
    alice, bob, carol, gid = await _trio(users)
    old = bob.groups.group(gid).to_bytes()
    await alice.groups.update(gid)
    await sync_all(bob, carol)
    # bob's state goes back to an old copy and nothing new arrives: his own commit finds out.
    bob.groups.store.keep(Group.from_bytes(old))
    event = await bob.groups.update(gid)
    assert event.kind == "commit" and event.epoch == 4  # after his rejoin (epoch 3)
    await sync_all(alice, carol)
    _agree(gid, alice, bob, carol)


async def test_resync_keeps_admin_role_queue_and_policy(users):
    alice, bob, carol, gid = await _trio(users)
    await alice.groups.promote(gid, bob.user_id)
    await bob.groups.set_policy(gid, "mentions")
    event = await bob.groups.resync(gid)
    assert event.kind == "resynced" and event.epoch == 2
    info = await alice.groups.info(gid)
    assert info.roles == {alice.user_id: "admin", bob.user_id: "admin"}
    assert (await bob.groups.info(gid)).my_leaf is not None
    await sync_all(alice, carol)
    _agree(gid, alice, bob, carol)
    # His queue and notification policy came along.
    await alice.groups.send(gid, "still there?")
    got = [e for e in await bob.sync() if e.kind == "message"]
    assert [(e.message, e.policy) for e in got] == [("still there?", "mentions")]
    # Still admin: bob can remove carol.
    await bob.groups.remove(gid, carol.user_id)
    await alice.sync()
    _agree(gid, alice, bob)


async def _external_commit(m: Member, gid: bytes, remove_prior: int, key: bytes) -> bytes:
    """An external commit bundle by ``m`` (not in the group, given its ``key``) that removes
    ``remove_prior``."""
    state = await m.groups.group_state(gid, key=key)
    joined, commit = Group.join_external(
        state.group_info,
        state.ratchet_tree,
        m.client.credential,
        m.client.state.signature_private,
        remove_prior=remove_prior,
    )
    return encode_commit_bundle(commit, joined.group_info(with_tree=True), None)


async def _refused(m: Member, gid: bytes, body: bytes, key: bytes) -> tuple[int, str]:
    queue = await m.client.new_queue()
    with pytest.raises(RoostError) as e:
        await m.client.request(
            "POST",
            f"/v1/groups/{group_path(gid)}/commits",
            params={"queue_id": queue.id},
            content=body,
            content_type=MLS_MEDIA_TYPE,
            headers={**queue.headers, **key_headers(key)},
        )
    return e.value.status, e.value.code


async def test_ds_refuses_resync_removing_another_clients_leaf(users):
    alice, bob, carol, gid = await _trio(users)
    # The GroupInfo is public while external joins are on, so that outsiders can build commits.
    await alice.groups.set_external_join(gid, True)
    bob_phone = await second_member(users, bob)
    bob_leaf = bob.groups.group(gid).leaf_index
    carol_leaf = carol.groups.group(gid).leaf_index
    key = alice.groups.group_key(gid)  # handed to bob's phone with the group's id
    assert key is not None
    takes_bobs = await _external_commit(bob_phone, gid, bob_leaf, key)
    takes_carols = await _external_commit(bob_phone, gid, carol_leaf, key)
    # bob's other client may not take bob's leaf (same user, another client) ...
    assert await _refused(bob_phone, gid, takes_bobs, key) == (403, "not_own_leaf")
    # ... nor may a joiner remove someone else's, with external joins on or off.
    assert await _refused(bob_phone, gid, takes_carols, key) == (403, "not_own_leaf")
    await alice.groups.set_external_join(gid, False)
    assert await _refused(bob_phone, gid, takes_carols, key) == (403, "not_own_leaf")
    # Nothing changed: everyone still at epoch 1 and talking.
    assert (await alice.groups.info(gid)).epoch == 1
    await _all_talk(gid, alice, bob, carol)


async def test_member_removed_before_it_could_resync_is_told_and_forgets(users):
    """bob cannot process a commit (corrupted membership tag) and, before he syncs, alice
    removes him. His resync finds no leaf of his at the DS: that is his removal (a removed
    client is not sent the removing commit), so he is told so once and forgets the group,
    instead of rejecting every later item and trying to rejoin each time."""
    alice, bob, carol, gid = await _trio(users)
    await _corrupted_self_update(alice, gid)
    await alice.groups.remove(gid, bob.user_id)

    events = await bob.sync()
    assert [e.kind for e in events] == ["rejected", "removed"], events
    assert "membership tag" in events[0].text
    assert events[1].text == REMOVED_WHILE_OUT_OF_STEP
    assert not bob.groups.store.holds(gid)
    assert await bob.sync() == []

    # carol, still a member, heals as usual.
    assert "resynced" in [e.kind for e in await carol.sync()]
    await alice.sync()
    assert _agree(gid, alice, carol)
