"""Admin succession in a group spanning domains: the group's DS (a.test) promotes a member of
another domain when the only admin leaves, and the signed ``admin_promoted`` notice reaches
that member's queue on b.test through the outbox."""

from __future__ import annotations

from ..e2e.helpers import sync_until
from .harness import Federation
from .test_ds_flows import TIMEOUT, B, group_with_remote_member, message, new


async def test_remote_member_promoted_when_the_only_admin_leaves(fed: Federation):
    alice, bob, gid = await group_with_remote_member(fed)
    dave = await new(fed, B, "dave")
    conn = await bob.client.open_connection(dave.user_id)  # both on b.test
    await bob.client.send_connection_request(conn.connection_id, b"hi")
    await dave.client.accept_connection(conn.connection_id)

    await alice.groups.leave(gid)
    await sync_until(bob, lambda e: e.kind == "proposal" and e.group_id == gid, TIMEOUT)
    event = await bob.groups.commit(gid)  # forwarded to a.test's DS
    assert event.removed == (alice.client_id,)
    notice = await sync_until(
        bob,
        lambda e: e.kind in ("notice", "rejected") and e.group_id == gid,
        TIMEOUT,
    )
    assert notice.kind == "notice", notice  # verified against a.test's external sender
    assert (notice.notice["type"], notice.notice["user_id"]) == ("admin_promoted", bob.user_id)
    assert (await bob.groups.info(gid)).roles == {bob.user_id: "admin"}

    await bob.groups.invite(gid, [dave.user_id])
    await sync_until(dave, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    await dave.groups.send(gid, "dave here")
    await message(bob, gid, "dave here")
