"""Group keys end to end against a real homeserver process (SQLite and PostgreSQL) that seals
groups created with a key and answers only requests that present it.

Every way into a group brings its key through the server: an invitee unwraps it from its
``welcome`` event, a connection's responder from the ``connection_request`` event, a user's
new device from its Welcome; an external join and a resync present the key the client holds
(given as ``<group>#<key>`` to the CLI), also after a restart of the client from its home.
A client without the key gets ``group_key_required``, one with another group's key
``wrong_group_key``; a Welcome whose wrap does not open fails that Welcome, not the client.
A server notice sealed under the group key opens with it and reads as the notice in the clear."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from roost.client import Home, RoostClient, RoostError
from roost.client.group_key import GROUP_KEY_WRAP_HEADER, new_group_key, wrap_group_key
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.queue_item import (
    ITEM_SEALED_NOTICE,
    ITEM_SERVER_NOTICE,
    QueueItem,
    encode_queue_item,
)
from roost.protocol.sealed_notice import open_notice, seal_notice
from tests.integration.conftest import unique_name
from tests.integration.test_cli import Cli
from tests.server.delivery_helpers import create_group
from tests.server.delivery_helpers import member as raw_member
from tests.server.helpers import register_user

from .helpers import (
    Member,
    alice_and_bob_in_a_group,
    connect,
    member,
    new_member,
    second_member,
    sync_all,
    sync_until,
)


def _saved_keys(home) -> dict[str, str]:
    return json.loads((home / "group_client.json").read_text())["group_keys"]


async def _reads(reader: Member, gid: bytes, sender: Member, text: str) -> None:
    """``sender`` sends ``text`` in the group and ``reader`` reads it there."""
    await sender.groups.send(gid, text)
    await reader.sync()
    assert (sender.client_id, text) in reader.messages(gid)


@pytest.mark.parametrize("tree", [True, False], ids=["tree", "no-tree"])
async def test_an_invitee_gets_the_key_from_its_welcome_event(users, tmp_path, tree):
    alice = member(await users.new("alice", keypackages=2, home=Home(tmp_path / "alice")))
    bob = member(await users.new("bob", keypackages=2, home=Home(tmp_path / "bob")))
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    key = alice.groups.group_key(gid)
    assert key is not None and len(key) == 32
    assert _saved_keys(tmp_path / "alice") == {b64u(gid): b64u(key)}

    await alice.groups.invite(gid, [bob.user_id], ratchet_tree_in_welcome=tree)
    # Without the tree in the Welcome, bob fetches it from the DS: with the key he unwrapped.
    assert [e.kind for e in await bob.sync()] == ["joined"]
    assert bob.groups.group_key(gid) == key
    assert _saved_keys(tmp_path / "bob") == {b64u(gid): b64u(key)}
    await _reads(alice, gid, bob, "bob, with the key")
    await _reads(bob, gid, alice, "alice too")
    assert (await bob.groups.info(gid)).roles == {alice.user_id: "admin"}


async def test_a_connection_requests_responder_gets_the_key_and_both_send(users, tmp_path):
    alice = member(await users.new("alice", keypackages=2))
    bob = member(await users.new("bob", keypackages=2, home=Home(tmp_path / "bob")))
    conn, gid = await alice.groups.request_connection(bob.user_id)
    key = alice.groups.group_key(gid)
    assert key is not None

    # bob's sync sees the request (its Welcome and wrap are kept in his home); he accepts
    # after a restart of his client.
    assert await bob.sync() == []
    await bob.client.aclose()
    bob = member(users.track(RoostClient.open(tmp_path / "bob")))
    _, joined = await bob.groups.accept_connection(conn.connection_id)
    assert joined is not None and joined.kind == "joined"
    assert bob.groups.group_key(gid) == key
    assert _saved_keys(tmp_path / "bob") == {b64u(gid): b64u(key)}
    await _reads(alice, gid, bob, "accepted, with the key")
    assert "connected" in [e.kind for e in alice.seen]
    await _reads(bob, gid, alice, "hello bob")


async def test_a_responder_that_accepts_without_a_sync_first_gets_the_key_too(users):
    alice = member(await users.new("alice", keypackages=2))
    bob = member(await users.new("bob", keypackages=2))
    conn, gid = await alice.groups.request_connection(bob.user_id)
    _, joined = await bob.groups.accept_connection(conn.connection_id)  # read from the queue
    assert joined is not None and joined.kind == "joined"
    assert bob.groups.group_key(gid) == alice.groups.group_key(gid)
    await _reads(alice, gid, bob, "hi")


async def test_a_members_new_device_gets_the_key_from_its_welcome(users):
    alice, bob, gid = await alice_and_bob_in_a_group(users)
    phone = await second_member(users, bob)

    [added] = await bob.groups.add_own_devices(gid)  # bob is no admin: his own device
    assert added.added == (phone.client_id,)
    assert [e.kind for e in await phone.sync()] == ["joined"]
    assert phone.groups.group_key(gid) == alice.groups.group_key(gid) is not None
    assert {s.group_id for s in await phone.groups.list()} == {gid}
    await _reads(alice, gid, phone, "from bob's phone")
    await sync_all(bob)
    assert (phone.client_id, "from bob's phone") in bob.messages(gid)


async def test_an_external_join_takes_the_key_without_it_the_server_refuses(users):
    alice = await new_member(users, "alice")
    carol = await new_member(users, "carol")
    dave = await new_member(users, "dave")
    gid = (await alice.groups.create(external_join=True)).group_id
    key = alice.groups.group_key(gid)
    assert key is not None

    # The group id alone, another key, a malformed key: clear errors, nothing joined.
    with pytest.raises(RoostError) as no_key:
        await dave.groups.join_external(gid)
    assert (no_key.value.status, no_key.value.code) == (403, "group_key_required")
    with pytest.raises(RoostError) as wrong:
        await dave.groups.join_external(gid, key=new_group_key())
    assert (wrong.value.status, wrong.value.code) == (403, "wrong_group_key")
    with pytest.raises(RoostError) as malformed:
        await dave.groups.join_external(gid, key=b"too short")
    assert (malformed.value.status, malformed.value.code) == (422, "invalid_group_key")
    assert dave.groups.local_group_ids() == [] and dave.groups.group_key(gid) is None
    with pytest.raises(RoostError) as info:
        await dave.groups.info(gid)
    assert info.value.code == "group_key_required" and b64u(key) not in str(info.value)

    joined = await carol.groups.join_external(gid, key=key)
    assert joined.kind == "joined" and carol.groups.group_key(gid) == key
    await alice.sync()
    await _reads(carol, gid, alice, "welcome carol")
    await _reads(alice, gid, carol, "thanks")


async def test_a_resync_presents_the_key_it_holds(users, tmp_path):
    alice = await new_member(users, "alice")
    bob = member(await users.new("bob", keypackages=2, home=Home(tmp_path / "bob")))
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await bob.sync()

    # bob loses his group state; the key stays in his home with the group's queue.
    [state] = (tmp_path / "bob").rglob(f"{gid.hex()}.mls")
    state.unlink()
    await bob.client.aclose()
    bob = member(users.track(RoostClient.open(tmp_path / "bob")))
    resynced = await bob.groups.resync(gid)
    assert resynced.kind == "resynced"
    assert bob.groups.group_key(gid) == alice.groups.group_key(gid)
    await _reads(alice, gid, bob, "back again")
    await _reads(bob, gid, alice, "welcome back")


async def test_the_creator_goes_on_with_the_key_after_a_restart(users, tmp_path):
    alice = member(await users.new("alice", keypackages=2, home=Home(tmp_path / "alice")))
    bob = await new_member(users, "bob")
    carol = await new_member(users, "carol")
    await connect(alice, bob)
    await connect(alice, carol)
    gid = (await alice.groups.create()).group_id
    key = alice.groups.group_key(gid)
    await alice.groups.invite(gid, [bob.user_id])
    await bob.sync()

    await alice.client.aclose()
    again = member(users.track(RoostClient.open(tmp_path / "alice")))
    assert again.groups.group_key(gid) == key
    await _reads(bob, gid, again, "after a restart")
    await again.groups.set_policy(gid, "all")
    await again.groups.promote(gid, bob.user_id)
    assert gid in {s.group_id for s in await again.groups.list()}
    await again.groups.commit(gid)
    await again.groups.invite(gid, [carol.user_id])  # the wrap, made after the restart
    assert [e.kind for e in await carol.sync()] == ["joined"]
    assert carol.groups.group_key(gid) == key
    await _reads(again, gid, carol, "carol here")

    # A home that lost the key: the server asks for it; nothing else breaks.
    await again.client.aclose()
    saved = json.loads((tmp_path / "alice" / "group_client.json").read_text())
    saved["group_keys"] = {}
    (tmp_path / "alice" / "group_client.json").write_text(json.dumps(saved))
    keyless = member(users.track(RoostClient.open(tmp_path / "alice")))
    with pytest.raises(RoostError) as e:
        await keyless.groups.send(gid, "without the key")
    assert e.value.code == "group_key_required"
    with pytest.raises(RoostError) as e:
        await keyless.groups.info(gid)
    assert e.value.code == "group_key_required"

    await bob.groups.delete(gid)  # bob is an admin now
    assert bob.groups.group_key(gid) is None  # the membership ended: the key goes with it


async def test_a_wrap_made_under_another_key_fails_that_welcome_only(users, monkeypatch):
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    key = alice.groups.group_key(gid)
    assert key is not None

    # A committer whose wrap is made under a key that is not the new epoch's exporter: the
    # server cannot tell (it passes the wrap on unopened).
    channel = alice.client._channel
    send = channel.request

    async def bad_wrap(method: str, path: str, *, headers=None, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        if headers and GROUP_KEY_WRAP_HEADER in headers:
            headers = {**headers, GROUP_KEY_WRAP_HEADER: wrap_group_key(key, gid, new_group_key())}
        return await send(method, path, headers=headers, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(channel, "request", bad_wrap)
        await alice.groups.invite(gid, [bob.user_id])

    [failed] = await bob.sync()
    assert failed.kind == "welcome_failed" and "group key" in failed.text
    assert b64u(key) not in failed.text
    assert bob.groups.local_group_ids() == [] and bob.groups.group_key(gid) is None
    assert await bob.sync() == []  # not tried again

    # bob's client goes on: another group's (good) Welcome joins.
    other = (await alice.groups.create()).group_id
    await alice.groups.invite(other, [bob.user_id])
    assert [e.kind for e in await bob.sync()] == ["joined"]
    assert bob.groups.group_key(other) == alice.groups.group_key(other)
    await _reads(alice, other, bob, "this one worked")


async def _server_notice(m: Member, gid: bytes) -> tuple[int, QueueItem, bytes]:
    """The next server notice in ``m``'s queue of ``gid``, unprocessed: its seq, the item as the
    DS queued it and the encoded SignedNotice in it, opened with the group key (the DS seals
    every notice of a keyed group)."""
    queue = m.groups.queue_of(gid)
    assert queue is not None
    for _ in range(100):  # the DS fans a notice out in the background
        page = await m.client.fetch_queue(queue, m.groups.store.cursors.after(gid))
        for msg in page.messages:
            item = QueueItem.decode(msg.payload)
            assert item.item_type != ITEM_SERVER_NOTICE, "a keyed group's notice in the clear"
            if item.item_type == ITEM_SEALED_NOTICE:
                key = m.groups.group_key(gid)
                assert key is not None
                signed = open_notice(key, gid, item.body)
                assert signed is not None
                return msg.seq, item, signed
        await asyncio.sleep(0.1)
    raise AssertionError("no server notice reached the queue")


async def test_a_notice_sealed_under_the_group_key_reads_as_the_notice_another_key_is_refused(
    users,
):
    """Queue item type 3: a member opens it with the group's key and verifies the notice in it
    as one in the clear; sealed under another key, or for a group whose key it does not hold,
    it is refused with a reason and nothing of it is shown."""
    alice, bob, gid = await alice_and_bob_in_a_group(users)
    key = alice.groups.group_key(gid)
    assert key is not None
    await bob.client.set_display_name("Robert")
    seq, item, signed = await _server_notice(alice, gid)
    queue = alice.groups.queue_of(gid)
    assert queue is not None

    def sealed(under: bytes, group_id: bytes = gid) -> bytes:
        body = seal_notice(under, group_id, signed)
        return encode_queue_item(group_id, item.group_seq, b"", ITEM_SEALED_NOTICE, body)

    def clear() -> bytes:
        return encode_queue_item(gid, item.group_seq, b"", ITEM_SERVER_NOTICE, signed)

    other = b"no-key@" + gid.rpartition(b"@")[2]  # a group alice holds no key for
    wrong, no_key, in_clear, right = await alice.groups.handle_queue_messages(
        [
            (seq, sealed(new_group_key())),
            (seq + 1, sealed(key, other)),
            (seq + 2, clear()),
            (seq + 3, sealed(key)),
        ],
        queue_id=queue.id,
    )
    assert (wrong.kind, wrong.group_id, wrong.notice) == ("rejected", gid, None)
    assert wrong.text == "unverified server notice: it is sealed under another key than the group's"
    assert (no_key.kind, no_key.group_id) == ("rejected", other)
    assert no_key.text == "unverified server notice: it is sealed and we hold no key for its group"
    assert in_clear.kind == right.kind == "notice"
    assert right.notice == in_clear.notice
    assert (right.notice["type"], right.notice["user_id"]) == ("display_name_changed", bob.user_id)
    assert right.text == in_clear.text == f"{bob.user_id} is now called 'Robert'"
    assert b64u(key) not in wrong.text + no_key.text


def test_the_cli_joins_with_group_hash_key_and_refuses_without_it(server, tmp_path):
    alice = Cli(server.url, tmp_path / "alice")
    carol = Cli(server.url, tmp_path / "carol")
    alice.run("register", unique_name("alice"), "--no-password")
    carol_id = carol.run("register", unique_name("carol"), "--no-password")["user_id"]
    created = alice.run("group", "create", "--external-join")
    gid, join = created["group_id"], created["join"]
    key = join.partition("#")[2]
    assert join == f"{gid}#{key}" and len(unb64u(key)) == 32

    err = carol.run("group", "join", gid, ok=False)
    assert err["error"] == "group_key_required"
    err = carol.run("group", "join", f"{gid}#{b64u(new_group_key())}", ok=False)
    assert err["error"] == "wrong_group_key" and key not in json.dumps(err)
    assert carol.run("group", "list") == []

    assert carol.run("group", "join", join)["kind"] == "joined"
    assert _saved_keys(tmp_path / "carol") == {gid: key}
    # a member who did not create the group hands on the same invitation
    assert carol.run("group", "key", gid) == {"group_id": gid, "join": join}
    assert carol.run("group", "key", b64u(b"not ours"), ok=False)["error"] == "no_group_key"
    carol.run("group", "send", gid, "hi from carol")
    events = alice.run("group", "sync")
    assert any(e.get("sender", "").startswith(carol_id + "/") for e in events)


async def test_creating_a_group_that_exists_under_another_key_changes_nothing(users, server):
    """Someone who learnt a group's id posts a new group with that id and a key of their own:
    ``409 group_exists``, and the DS keeps the members' key: its next notice to the group is
    sealed under that key and the members read it."""
    alice, bob, gid = await alice_and_bob_in_a_group(users)

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        mallory = await raw_member(http, await register_user(http, unique_name("mallory")))
        _, r = await create_group(
            http,
            mallory,
            group_id=gid,
            headers={**mallory.queue_headers, "Roost-Group-Key": b64u(new_group_key())},
        )
    assert r.status_code == 409 and r.json()["code"] == "group_exists", r.text

    await bob.client.set_display_name("Robert")
    event = await sync_until(alice, lambda e: e.kind in ("notice", "rejected"))
    assert event.kind == "notice", event
    assert event.notice["display_name"] == "Robert"
