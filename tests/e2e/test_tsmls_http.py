"""A ts-mls client joins a Roost group through the HTTP API alongside
roost clients and exchanges messages and commits with them — including the homeserver's
external Remove proposal.

ts-mls 1.6.4 reads `external_senders` as one ExternalSender instead of the RFC's vector
(docs/interop.md). The harness patches its decoder (web/patches/rfc-external-senders.mjs,
applied by npm's postinstall and again here), switched on only in this test's driver by
ROOST_TSMLS_RFC_EXTERNAL_SENDERS=1; the server's requirement is unchanged.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from roost.client.group_key import (
    EXPORTER_LABEL,
    GROUP_KEY_WRAP_HEADER,
    KEY_BYTES,
    key_headers,
    unwrap_group_key,
    wrap_group_key,
)
from roost.client.groups import Groups, group_path
from roost.mls.framing import MLSMessage
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.key_package_batch import encode_key_package_batch
from roost.protocol.queue_item import ITEM_MLS_MESSAGE, QueueItem
from tests.interop.tsmls_peer import DRIVER_DIR, TsMlsDriver, TsMlsPeer, ensure_installed

from .helpers import connect, new_member, sync_all

PATCH_SWITCH = "ROOST_TSMLS_RFC_EXTERNAL_SENDERS"


def _driver(rfc_external_senders: bool) -> TsMlsDriver:
    ensure_installed()
    subprocess.run(["npm", "run", "--silent", "postinstall"], cwd=DRIVER_DIR, check=True)
    before = os.environ.get(PATCH_SWITCH)
    os.environ[PATCH_SWITCH] = "1" if rfc_external_senders else "0"
    try:
        return TsMlsDriver()  # the node process inherits the switch
    finally:
        if before is None:
            del os.environ[PATCH_SWITCH]
        else:
            os.environ[PATCH_SWITCH] = before


@pytest.fixture(scope="module")
def patched_driver():
    d = _driver(True)
    yield d
    d.close()


def test_patch_is_what_makes_ts_mls_read_rfc_external_senders(patched_driver):
    """Upstream ts-mls (switch off) still has the bug; the patched reading accepts the
    homeserver's RFC-encoded extension."""
    from tests.interop.roost_peer import Homeserver

    ext = Homeserver().extension
    upstream = _driver(False)
    try:
        with pytest.raises(Exception, match="Could not decode external_senders"):
            TsMlsPeer(b"up", upstream).create_group(uuid.uuid4().bytes, [ext])
    finally:
        upstream.close()
    TsMlsPeer(b"patched", patched_driver).create_group(uuid.uuid4().bytes, [ext])


class TsMlsMember:
    """A ts-mls MLS client whose HTTP side (registration, token, queues) is a RoostClient.
    The group key comes with its Welcome, wrapped under ts-mls's exporter of the epoch it joins
    (``group_key``); it is presented on every request on the group."""

    def __init__(self, client, driver: TsMlsDriver) -> None:
        self.client = client
        self.peer = TsMlsPeer(client.user_id.encode(), driver)
        self.queue_id = ""
        self.after = 0
        self.key: bytes | None = None

    def wrap_key(self, gid: bytes) -> bytes:
        """ts-mls's MLS-Exporter("roost group key", group id, 32) of its current epoch."""
        return self.peer.state(gid, EXPORTER_LABEL, gid, KEY_BYTES).exporter

    async def post_commit(self, gid: bytes, bundle) -> None:
        """Submit a ts-mls commit; with a Welcome, the key wrapped for the joiners' epoch (the
        one the commit made: ts-mls's state moved to it already)."""
        headers = key_headers(self.key)
        if bundle.welcome is not None and self.key is not None:
            headers[GROUP_KEY_WRAP_HEADER] = wrap_group_key(self.key, gid, self.wrap_key(gid))
        await self.client.request(
            "POST",
            f"/v1/groups/{group_path(gid)}/commits",
            content=encode_commit_bundle(bundle.commit, bundle.group_info, bundle.welcome),
            content_type="message/mls",
            headers=headers,
        )

    async def publish_key_package(self) -> None:
        st = self.client.state
        kps = [
            self.peer._call(
                "key_package_x509",
                certificates=[c.hex() for c in st.credential_chain],
                signature_private=st.signature_private.hex(),
                signature_public=self.client.signature_key.hex(),
                last_resort=last_resort,
            )["key_package"]
            for last_resort in (False, True)  # the directory wants a last-resort one too
        ]
        batch = encode_key_package_batch([bytes.fromhex(kp) for kp in kps])
        await self.client.publish_raw_key_packages(batch)

    async def join(self) -> bytes:
        welcomes = [e for e in (await self.client.fetch_direct(0)).events if e.type == "welcome"]
        assert welcomes, "no Welcome in the direct queue"
        gid = self.peer.join(welcomes[-1].payload)
        wrap = welcomes[-1].group_key_wrap
        assert wrap, "the Welcome event carries no group key wrap"
        self.key = unwrap_group_key(wrap, gid, self.wrap_key(gid))
        self.queue_id = await self.client.create_queue()  # its key is kept by the client
        await self.client.request(
            "PUT",
            f"/v1/groups/{group_path(gid)}/queue",
            json={"queue_id": self.queue_id},
            # registering needs the queue's key, and the group's
            headers={**self.client.queue(self.queue_id).headers, **key_headers(self.key)},
        )
        return gid

    async def receive(self) -> list:
        page = await self.client.fetch_queue(self.queue_id, self.after)
        out = []
        for m in page.messages:
            item = QueueItem.decode(m.payload)
            if item.item_type == ITEM_MLS_MESSAGE:
                out.append(self.peer.process(item.body))
            self.after = m.seq
        if page.messages:
            await self.client.ack_queue(self.queue_id, self.after)
        return out


async def test_tsmls_client_joins_over_http_and_talks_with_roost_clients(users, patched_driver):
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    dave = TsMlsMember(await users.new("dave"), patched_driver)
    await dave.publish_key_package()
    await connect(alice, bob)
    dave_conn = await alice.client.open_connection(dave.client.user_id)
    await alice.client.send_connection_request(dave_conn.connection_id, b"hi")
    await dave.client.accept_connection(dave_conn.connection_id)

    # alice (roost) creates the group with the homeserver as external sender, adds bob and the
    # ts-mls client (its KeyPackage claimed and verified like any other: x509 from our AS).
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id, dave.client.user_id])
    assert await dave.join() == gid
    await bob.sync()
    a = alice.groups.group(gid)
    assert dave.peer.state(gid).epoch_authenticator == a.epoch_authenticator

    # Messages both ways.
    await alice.groups.send(gid, "hello ts-mls")
    [got] = await dave.receive()
    assert (got.kind, got.data) == ("application", b"hello ts-mls")
    assert dave.key == alice.groups.group_key(gid) is not None
    dave_groups = Groups(dave.client)
    dave_groups.store.set_group_key(gid, dave.key)
    sent = await dave_groups.send_raw(gid, dave.peer.encrypt(gid, b"hello roost"))
    assert sent.group_seq > 0
    await sync_all(alice, bob)
    for m in (alice, bob):
        assert m.messages(gid)[-1] == (dave.client.client_id, "hello roost")

    # Commits both ways: a roost update, then a ts-mls self-update through the DS.
    await bob.groups.update(gid)
    assert [r.kind for r in await dave.receive()] == ["commit"]
    await dave.post_commit(gid, dave.peer.self_update(gid))
    await sync_all(alice, bob)
    epoch = a.epoch
    assert epoch == bob.groups.group(gid).epoch == dave.peer.state(gid).epoch
    assert dave.peer.state(gid).epoch_authenticator == a.epoch_authenticator
    await bob.groups.send(gid, "after your update")
    assert [r.data for r in await dave.receive()] == [b"after your update"]

    # bob deletes his account: the homeserver proposes his removal as external sender (the
    # patched ts-mls verifies it), alice commits it, everyone stays in step.
    await bob.client.delete_account()
    import asyncio

    kinds: list[str] = []
    for _ in range(100):
        kinds += [r.kind for r in await dave.receive()]
        if "proposal" in kinds:
            break
        await asyncio.sleep(0.1)
    assert "proposal" in kinds
    for _ in range(100):
        await alice.sync()
        if a.pending_proposal_refs():
            break
        await asyncio.sleep(0.1)
    event = await alice.groups.commit(gid)
    assert event.removed == (bob.client_id,)
    [commit] = await dave.receive()
    assert commit.kind == "commit"
    assert dave.peer.state(gid).epoch_authenticator == a.epoch_authenticator
    await alice.groups.send(gid, "just us two")
    assert [r.data for r in await dave.receive()] == [b"just us two"]


async def test_tsmls_inviter_without_the_tree_roost_joiner_fetches_it(users, patched_driver):
    """ts-mls leaves the ratchet tree out of its Welcomes by default: the roost client it
    invites joins with the tree from the DS, and everyone stays in step."""
    alice = await new_member(users, "alice")
    carol = await new_member(users, "carol")
    dave = TsMlsMember(await users.new("dave"), patched_driver)
    await dave.publish_key_package()
    for requester, responder in ((alice.client, dave.client), (dave.client, carol.client)):
        conn = await requester.open_connection(responder.user_id)
        await requester.send_connection_request(conn.connection_id, b"hi")
        await responder.accept_connection(conn.connection_id)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [dave.client.user_id])
    assert await dave.join() == gid
    await alice.groups.promote(gid, dave.client.user_id)  # adding takes an admin

    [kp] = await dave.client.claim_key_packages(carol.user_id)
    bundle = dave.peer.add_members(gid, [MLSMessage(kp).encode()])
    assert bundle.welcome is not None
    await dave.post_commit(gid, bundle)  # the wrap made with ts-mls's exporter
    await sync_all(alice, carol)
    assert [e.kind for e in carol.seen] == ["joined"], carol.seen
    assert carol.groups.group_key(gid) == alice.groups.group_key(gid)
    a = alice.groups.group(gid)
    assert carol.groups.group(gid).epoch_authenticator == a.epoch_authenticator
    assert dave.peer.state(gid).epoch_authenticator == a.epoch_authenticator
    await carol.groups.send(gid, "hello from the joiner")
    await sync_all(alice)
    assert alice.messages(gid) == [(carol.client_id, "hello from the joiner")]
    assert [r.data for r in await dave.receive()] == [b"hello from the joiner"]
