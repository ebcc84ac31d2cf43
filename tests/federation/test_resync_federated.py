"""Resync across domains: a member on another homeserver (bob@b.test) that cannot process a
commit a.test's DS accepted rejoins in place of its own leaf, through its own server."""

from __future__ import annotations

from roost.client.groups import group_path
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.media_types import MLS_MEDIA_TYPE

from ..e2e.helpers import sync_until
from ..e2e.test_resync_e2e import _flip_membership_tag
from .harness import Federation
from .test_ds_flows import TIMEOUT, group_with_remote_member, message


async def test_remote_member_resyncs_after_corrupted_commit(fed: Federation):
    alice, bob, gid = await group_with_remote_member(fed)
    await bob.groups.set_policy(gid, "mentions")
    # alice's self-update reaches bob with a corrupted membership tag (a.test's DS cannot tell).
    group = alice.groups.group(gid)
    out = group.commit(force_path=True)
    await alice.client.request(
        "POST",
        f"/v1/groups/{group_path(gid)}/commits",
        content=encode_commit_bundle(_flip_membership_tag(out.commit), out.group_info, None),
        content_type=MLS_MEDIA_TYPE,
        headers=alice.groups.key_headers(gid),
    )
    group.merge_pending_commit()
    alice.groups.store.keep(group)

    resynced = await sync_until(bob, lambda e: e.kind == "resynced", TIMEOUT)
    assert resynced.epoch == 3
    commit = await sync_until(alice, lambda e: e.kind == "commit" and e.epoch == 3, TIMEOUT)
    assert commit.sender == bob.client_id and "rejoined" in commit.text
    assert alice.groups.group(gid).epoch_authenticator == bob.groups.group(gid).epoch_authenticator

    # Both talk and commit again; bob's queue on b.test and his policy came along.
    await alice.groups.send(gid, "hello again")
    got = await message(bob, gid, "hello again")
    assert got.policy == "mentions"
    await bob.groups.send(gid, "back")
    await message(alice, gid, "back")
    await bob.groups.update(gid)
    await sync_until(alice, lambda e: e.kind == "commit" and e.epoch == 4, TIMEOUT)
    assert alice.groups.group(gid).epoch_authenticator == bob.groups.group(gid).epoch_authenticator
