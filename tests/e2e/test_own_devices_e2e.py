"""A user's own new devices join the user's groups without an admin, against a real homeserver
process (SQLite and PostgreSQL): a plain member adds its user's other clients (the DS decides
from the added leaf's verified credential); adding another user still needs an admin."""

from __future__ import annotations

import pytest

from roost.client import RoostError

from .helpers import Member, connect, new_member, second_member, sync_all


def _agree(group_id: bytes, *members: Member) -> int:
    states = {
        (m.groups.group(group_id).epoch, m.groups.group(group_id).epoch_authenticator)
        for m in members
    }
    assert len(states) == 1, states
    return next(iter(states))[0]


async def _alice_and_bob_in_a_group(users) -> tuple[Member, Member, bytes]:
    """alice (admin) and bob (a plain member, one client) in a group alice created."""
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await bob.sync()
    return alice, bob, gid


async def test_a_member_brings_its_users_new_device_into_the_group(users):
    alice, bob, gid = await _alice_and_bob_in_a_group(users)
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
    alice, bob, gid = await _alice_and_bob_in_a_group(users)
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
