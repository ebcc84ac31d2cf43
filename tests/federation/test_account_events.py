"""Account events across domains. Two real homeserver processes (a.test, b.test;
separate databases): a group lives on a.test's DS with bob@b.test as a member. When bob removes
a client, changes his display name or deletes his account on b.test, b.test tells a.test
through its outbox, and a.test's DS reacts as for a local user: server Remove proposals for
the gone leaves, signed notices to the members. A server speaks only for its own users."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from roost.client import RoostError
from roost.server.federation import signing
from roost.server.federation.outbox import (
    BATCH_MEDIA_TYPE,
    INBOX_PATH,
    BatchItem,
    encode_batch,
)

from ..e2e.helpers import Member, member, sync_until
from .harness import Federation, Homeserver
from .test_as_flows import signing_key_of
from .test_ds_flows import connect, message, new

A, B = "a.test", "b.test"
TIMEOUT = 30.0


async def server_removes(alice: Member, gid: bytes, client_id: str) -> None:
    """a.test's DS proposed the removal of ``client_id`` as external sender; alice commits it."""
    if not alice.groups.group(gid).pending_proposal_refs():
        await sync_until(alice, lambda e: e.kind == "proposal", TIMEOUT)
    event = await alice.groups.commit(gid)
    assert event.removed == (client_id,)


async def notice(alice: Member, kind: str):  # type: ignore[no-untyped-def]
    # kind "notice" means the client verified the signature against the group's external
    # sender (a.test's homeserver); a forged one would show up as "rejected".
    got = await sync_until(alice, lambda e: e.kind in ("notice", "rejected"), TIMEOUT)
    assert got.kind == "notice" and got.notice["type"] == kind, got
    return got


async def test_remote_client_removal_name_change_and_deletion_reach_the_group(fed: Federation):
    alice, bob = await new(fed, A, "alice"), await new(fed, B, "bob")
    phone = member(await fed.users(B).second_client(bob.client))
    await phone.client.publish_key_packages(2)
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])  # both of bob's clients
    for m in (bob, phone):
        await sync_until(m, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    assert len(alice.groups.leaves_of(gid, bob.user_id)) == 2

    # bob removes his phone on b.test: a.test's DS proposes removing its leaf.
    await bob.client.remove_client(phone.client.client_uuid)
    await server_removes(alice, gid, phone.client_id)
    assert len(alice.groups.group(gid).roster()) == 2
    await alice.groups.send(gid, "after the phone")
    await message(bob, gid, "after the phone")  # the remaining client still gets everything
    with pytest.raises(RoostError) as revoked:
        await phone.sync()  # the removed client has no access any more
    assert revoked.value.status == 401

    # A display-name change becomes a.test's signed notice to the group.
    await bob.client.set_display_name("Robert")
    got = await notice(alice, "display_name_changed")
    assert (got.notice["user_id"], got.notice["display_name"]) == (bob.user_id, "Robert")
    assert got.group_id == gid

    # Account deletion: a notice, a server Remove for his last leaf, and a.test forgets the
    # connection with him.
    await bob.client.delete_account()
    got = await notice(alice, "user_deleted")
    assert got.notice["user_id"] == bob.user_id
    assert got.notice["client_ids"] == [bob.client_id]
    await server_removes(alice, gid, bob.client_id)
    assert alice.groups.leaves_of(gid, bob.user_id) == []
    assert len(alice.groups.group(gid).roster()) == 1
    deadline = time.monotonic() + TIMEOUT
    while [
        c for c in await alice.client.connections() if bob.user_id in (c.requester, c.responder)
    ]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


async def post_inbox(origin: Homeserver, dest: Homeserver, items: list[BatchItem]) -> dict:
    """A batch signed with ``origin``'s real key, as ``origin``'s outbox would send it."""
    body = encode_batch(items)
    url = httpx.URL(dest.url + INBOX_PATH)
    wire = {
        "content-type": BATCH_MEDIA_TYPE,
        "content-digest": signing.content_digest(body),
        "roost-origin": origin.domain,
        "roost-destination": dest.domain,
    }
    target = signing.Target("POST", INBOX_PATH, "")
    key = await signing_key_of(origin)
    wire.update(signing.sign(key, target, wire, created=int(time.time())))
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(url, content=body, headers=wire)
    assert response.status_code == 200, response.text
    return response.json()


def event(event_type: str, user_id: str, payload: object) -> bytes:
    return json.dumps({"event_type": event_type, "user_id": user_id, "payload": payload}).encode()


async def test_forged_account_events_are_rejected(fed: Federation):
    alice, bob = await new(fed, A, "alice"), await new(fed, B, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await sync_until(bob, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)

    # Ids far above b.test's real outbox ids (a.test's high-water mark moves past them: this
    # test must stay the last of the module).
    first = 1 << 40
    forged = [
        # b.test speaking for users of other domains
        event("user_deleted", "mallory@c.test", {"client_ids": []}),
        event("client_removed", alice.user_id, {"client_id": alice.client_id}),
        # b.test naming alice's client (an a.test uuid) as one of bob's
        event(
            "client_removed",
            bob.user_id,
            {"client_id": f"{bob.user_id}/{alice.client.client_uuid}"},
        ),
        # malformed
        b"not json",
        event("client_removed", bob.user_id, {"client_id": "x@c.test/1"}),
        event("account_hijacked", bob.user_id, {}),
    ]
    items = [BatchItem(first + i, "account.event", body) for i, body in enumerate(forged)]
    result = await post_inbox(fed[B], fed[A], items)
    assert result["applied"] == [] and result["duplicate"] == []
    codes = [(r["id"] - first, r["code"]) for r in result["rejected"]]
    assert codes == [
        (0, "forbidden"),
        (1, "forbidden"),
        (2, "forbidden"),
        (3, "invalid_request"),
        (4, "invalid_request"),
        (5, "invalid_request"),
    ]

    # Nothing happened: no Remove proposal, no notice; the group works as before.
    await asyncio.sleep(1.5)  # a.test's DS would have reacted by now
    events = await alice.sync()
    assert not [e for e in events if e.kind in ("proposal", "notice")], events
    assert not alice.groups.group(gid).pending_proposal_refs()
    await alice.groups.send(gid, "still here")
    await message(bob, gid, "still here")
