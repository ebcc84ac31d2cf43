"""Own devices across domains, with two real homeserver processes (a.test, b.test): a plain
member of another domain brings its user's new device into a group on a.test's DS (the DS
verifies the added leaf against b.test's AS; the Welcome travels through the outbox), and a
KeyPackage of one given client is claimed across domains under the claim rule."""

from __future__ import annotations

import uuid

import pytest

from roost.client import RoostError

from ..e2e.helpers import member, sync_until
from .harness import Federation
from .test_ds_flows import TIMEOUT, A, B, connect, group_with_remote_member, message, new


async def test_a_remote_plain_member_adds_its_new_device(fed: Federation):
    alice, bob, gid = await group_with_remote_member(fed)  # bob@b.test, no admin
    phone = member(await fed.users(B).second_client(bob.client))
    await phone.client.publish_key_packages(3)

    [event] = await bob.groups.add_own_devices()
    assert event.group_id == gid and event.added == (phone.client_id,)
    await sync_until(phone, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    await sync_until(alice, lambda e: e.kind == "commit" and phone.client_id in e.added, TIMEOUT)
    await phone.groups.send(gid, "phone across domains")
    await message(alice, gid, "phone across domains")
    await message(bob, gid, "phone across domains")
    assert (await alice.groups.info(gid)).roles == {alice.user_id: "admin"}

    # Another user of b.test still needs an admin.
    dave = await new(fed, B, "dave")
    conn = await bob.client.open_connection(dave.user_id)
    await bob.client.send_connection_request(conn.connection_id, b"hi")
    await dave.client.accept_connection(conn.connection_id)
    with pytest.raises(RoostError) as refused:
        await bob.groups.invite(gid, [dave.user_id], retries=0)
    assert (refused.value.status, refused.value.code) == (403, "role_required")


async def test_claim_one_client_of_a_user_of_another_domain(fed: Federation):
    alice, bob = await new(fed, A, "alice"), await new(fed, B, "bob")
    phone = await fed.users(B).second_client(bob.client)
    await phone.publish_key_packages(2)
    carol = await new(fed, A, "carol")
    await connect(alice, bob)

    kp = await alice.client.claim_client_key_package(bob.user_id, phone.client_uuid)
    assert kp is not None and kp.leaf_node.signature_key == phone.signature_key
    assert (await bob.client.key_package_count()).count == 3  # bob's first client kept his
    for claimer, client_uuid, expected in (
        (carol, phone.client_uuid, (403, "no_connection")),
        (alice, str(uuid.uuid4()), (404, "client_not_found")),
    ):
        with pytest.raises(RoostError) as e:
            await claimer.client.claim_client_key_package(bob.user_id, client_uuid)
        assert (e.value.status, e.value.code) == expected
