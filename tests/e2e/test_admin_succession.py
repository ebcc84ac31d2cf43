"""A group always has an admin (docs/api.md "Roles, policy, settings"): when its last admin
leaves or deletes their account, the DS promotes the longest-standing remaining member, and
every member gets a signed ``admin_promoted`` notice. Real server processes, both engines."""

from __future__ import annotations

import pytest

from roost.client import RoostError

from .helpers import Member, connect, new_member, second_member, sync_all, sync_until

TIMEOUT = 30.0


def _promoted(gid: bytes):  # type: ignore[no-untyped-def]
    return lambda e: (
        e.kind == "notice" and e.group_id == gid and e.notice["type"] == "admin_promoted"
    )


async def _group(users) -> tuple[Member, Member, Member, Member, bytes]:
    """alice (only admin) adds bob, then carol; dave is connected to bob only."""
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    carol = await new_member(users, "carol")
    dave = await new_member(users, "dave")
    await connect(alice, bob)
    await connect(alice, carol)
    await connect(bob, dave)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await bob.sync()
    await alice.groups.invite(gid, [carol.user_id])
    await sync_all(bob, carol)
    return alice, bob, carol, dave, gid


async def _new_admin_invites(admin: Member, other: Member, newcomer: Member, gid: bytes) -> None:
    """The promoted admin adds someone; everyone ends in one epoch."""
    await admin.groups.invite(gid, [newcomer.user_id])
    await sync_until(newcomer, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    await sync_until(other, lambda e: e.kind == "commit" and newcomer.client_id in e.added)
    assert len({m.groups.group(gid).epoch_authenticator for m in (admin, other, newcomer)}) == 1


async def test_only_admin_leaves_longest_standing_member_becomes_admin(users):
    alice, bob, carol, dave, gid = await _group(users)
    await alice.groups.leave(gid)
    # carol commits alice's leave: bob joined before her, so bob becomes the admin.
    await sync_until(carol, lambda e: e.kind == "proposal", TIMEOUT)
    event = await carol.groups.commit(gid)
    assert event.removed == (alice.client_id,)

    info = await carol.groups.info(gid)
    assert info.roles == {bob.user_id: "admin"}
    for m in (bob, carol):
        notice = await sync_until(m, _promoted(gid), TIMEOUT)
        assert notice.notice["user_id"] == bob.user_id
        assert notice.text == f"{bob.user_id} is now an admin: the group had no admin left"
    # carol is still no admin; bob can now do what only admins may.
    with pytest.raises(RoostError) as refused:
        await carol.groups.set_external_join(gid, True)
    assert (refused.value.status, refused.value.code) == (403, "role_required")
    await _new_admin_invites(bob, carol, dave, gid)
    assert (await bob.groups.set_external_join(gid, True)).external_join


async def test_only_admins_account_deleted_member_promoted_and_told(users):
    alice, bob, carol, dave, gid = await _group(users)
    await alice.client.delete_account()
    notice = await sync_until(bob, _promoted(gid), TIMEOUT)
    assert notice.notice["user_id"] == bob.user_id
    await sync_until(carol, _promoted(gid), TIMEOUT)
    assert (await carol.groups.info(gid)).roles == {bob.user_id: "admin"}
    # bob commits the homeserver's Remove of alice's leaf along with the Add of dave.
    if not bob.groups.group(gid).pending_proposal_refs():
        await sync_until(bob, lambda e: e.kind == "proposal", TIMEOUT)
    await _new_admin_invites(bob, carol, dave, gid)
    assert len(bob.groups.group(gid).roster()) == 3
    assert (await carol.groups.info(gid)).roles == {bob.user_id: "admin"}


async def test_the_last_admin_cannot_step_down(users):
    alice, bob, carol, dave, gid = await _group(users)
    with pytest.raises(RoostError) as refused:
        await alice.groups.set_role(gid, alice.user_id, "member")
    assert (refused.value.status, refused.value.code) == (409, "last_admin")
    assert (await bob.groups.info(gid)).roles == {alice.user_id: "admin"}
    # With a second admin, stepping down is fine and no one else is promoted.
    await alice.groups.promote(gid, carol.user_id)
    await alice.groups.set_role(gid, alice.user_id, "member")
    assert (await bob.groups.info(gid)).roles == {carol.user_id: "admin"}


async def test_only_admins_last_client_in_the_group_removed(users):
    alice, bob, carol, dave, gid = await _group(users)
    laptop = await second_member(users, alice)  # alice's other device, not in the group
    await laptop.client.remove_client(alice.client.client_uuid)
    notice = await sync_until(carol, _promoted(gid), TIMEOUT)
    assert notice.notice["user_id"] == bob.user_id
    await sync_until(bob, _promoted(gid), TIMEOUT)
    # bob, now admin, commits the homeserver's Remove of alice's leaf with dave's Add; alice's
    # role went with her last leaf.
    if not bob.groups.group(gid).pending_proposal_refs():
        await sync_until(bob, lambda e: e.kind == "proposal", TIMEOUT)
    await _new_admin_invites(bob, carol, dave, gid)
    assert (await carol.groups.info(gid)).roles == {bob.user_id: "admin"}
