"""A user's own new devices join the user's groups without an admin, against a real homeserver
process (SQLite and PostgreSQL): a plain member adds its user's other clients (the DS decides
from the added leaf's verified credential); adding another user still needs an admin."""

from __future__ import annotations

import asyncio

import pytest

from roost.client import RoostError
from roost.client.group_events import roster_clients

from .helpers import Member, alice_and_bob_in_a_group, connect, new_member, second_member, sync_all


def _agree(group_id: bytes, *members: Member) -> int:
    states = {
        (m.groups.group(group_id).epoch, m.groups.group(group_id).epoch_authenticator)
        for m in members
    }
    assert len(states) == 1, states
    return next(iter(states))[0]


async def test_a_member_brings_its_users_new_device_into_the_group(users):
    alice, bob, gid = await alice_and_bob_in_a_group(users)
    phone = await second_member(users, bob)  # bob's new device, in no group yet

    # bob is no admin; inviting his own user adds his other clients.
    event = await bob.groups.invite(gid, [bob.user_id])
    assert event.added == (phone.client_id,)
    await sync_all(phone, alice)
    assert [e.kind for e in phone.seen] == ["joined"]
    assert _agree(gid, alice, bob, phone) == 2
    assert {s.group_id for s in await phone.groups.list()} == {gid}

    # The new device reads and sends; everyone reads it.
    await alice.groups.send(gid, "hi bob's phone")
    await phone.groups.send(gid, "phone here")
    await sync_all(alice, bob, phone)
    assert phone.messages(gid) == [(alice.client_id, "hi bob's phone")]
    assert alice.messages(gid)[-1] == (phone.client_id, "phone here")
    assert bob.messages(gid)[-1] == (phone.client_id, "phone here")
    assert (await alice.groups.info(gid)).roles == {alice.user_id: "admin"}  # no role gained


async def test_a_plain_member_still_cannot_add_another_user(users):
    alice, bob, gid = await alice_and_bob_in_a_group(users)
    carol = await new_member(users, "carol")
    await connect(bob, carol)
    epoch = bob.groups.group(gid).epoch
    with pytest.raises(RoostError) as e:
        await bob.groups.invite(gid, [carol.user_id], retries=0)
    assert (e.value.status, e.value.code) == (403, "role_required")
    # Naming his own user too does not smuggle carol in with his device.
    await second_member(users, bob)
    with pytest.raises(RoostError) as e:
        await bob.groups.invite(gid, [bob.user_id, carol.user_id], retries=0)
    assert (e.value.status, e.value.code) == (403, "role_required")
    assert bob.groups.group(gid).epoch == epoch  # nothing was merged
    await carol.sync()
    assert carol.seen == []


async def test_add_own_devices_brings_a_new_device_into_every_group(users):
    alice, bob, gid1 = await alice_and_bob_in_a_group(users)
    carol = await new_member(users, "carol")
    await connect(carol, bob)
    gid2 = (await carol.groups.create()).group_id
    await carol.groups.invite(gid2, [bob.user_id])
    await bob.sync()
    phone = await second_member(users, bob, keypackages=4)

    events = await bob.groups.add_own_devices()
    assert sorted(e.group_id for e in events) == sorted([gid1, gid2])
    assert all(e.kind == "commit" and e.added == (phone.client_id,) for e in events)
    await sync_all(phone, alice, carol)
    assert sorted(e.group_id for e in phone.seen if e.kind == "joined") == sorted([gid1, gid2])
    assert _agree(gid1, alice, bob, phone) == 2
    assert _agree(gid2, carol, bob, phone) == 2
    await phone.groups.send(gid2, "phone in carol's group")
    await carol.sync()
    assert carol.messages(gid2) == [(phone.client_id, "phone in carol's group")]
    # Nothing left to add: no commit, no event.
    assert await bob.groups.add_own_devices() == []
    assert await bob.groups.add_own_devices(gid1) == []
    assert bob.groups.group(gid1).epoch == 2


async def test_two_devices_adding_the_same_new_device_at_once_add_it_once(users):
    alice, bob, gid = await alice_and_bob_in_a_group(users)
    laptop = await second_member(users, bob)
    await bob.groups.invite(gid, [bob.user_id])  # the laptop joins first
    await sync_all(laptop, alice)
    phone = await second_member(users, bob, keypackages=4)

    # Both of bob's devices see the phone missing and add it at the same time: one commit
    # wins the epoch, the other catches up, finds the phone there and adds nothing.
    got = await asyncio.gather(bob.groups.add_own_devices(gid), laptop.groups.add_own_devices(gid))
    added = [e.added for events in got for e in events]
    assert added == [(phone.client_id,)], got
    await sync_all(phone, alice, bob, laptop)
    assert _agree(gid, alice, bob, laptop, phone) == 3
    roster = [c for _, c in sorted(roster_clients(alice.groups.group(gid)).items())]
    assert roster.count(phone.client_id) == 1
