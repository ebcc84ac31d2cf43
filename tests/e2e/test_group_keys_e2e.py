"""Group keys on the client against a real homeserver process: the creator's key is sent with
``POST /v1/groups`` and then with every request on the group, also after a restart of the
client from its home; a commit with a Welcome carries the key wrapped for the epoch the joiners
start in, which a joiner unwraps into the same key (a tampered wrap fails that Welcome, not the
client); external joins and resyncs present the key.

A server that does not seal groups yet ignores the headers: what is checked here is what the
client sends (recorded by a request hook on its HTTP client) and what it keeps."""

from __future__ import annotations

import json

import httpx

from roost.client import Home, RoostClient
from roost.client.connection_requests import on_connection_event
from roost.client.group_key import (
    GROUP_KEY_HEADER,
    GROUP_KEY_WRAP_HEADER,
    unwrap_group_key,
    wrap_key_of,
)
from roost.client.models import DirectEvent
from roost.protocol.base64url import b64u
from roost.protocol.commit_bundle import decode_commit_bundle

from .helpers import Member, connect, member, new_member


class Sent:
    """The requests one client sends (method, path, headers, body), recorded as they leave."""

    def __init__(self, client: RoostClient) -> None:
        self.requests: list[httpx.Request] = []
        client._http.event_hooks["request"].append(self._record)

    async def _record(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def on_group(self, group_id: bytes) -> list[httpx.Request]:
        prefix = f"/v1/groups/{b64u(group_id)}"
        return [
            r for r in self.requests if r.url.path == prefix or r.url.path.startswith(prefix + "/")
        ]

    def clear(self) -> None:
        self.requests.clear()


async def _alice_and_bob(users, tmp_path) -> tuple[Member, Member]:
    alice = member(await users.new("alice", keypackages=2, home=Home(tmp_path / "alice")))
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    return alice, bob


async def test_the_creators_key_goes_with_every_group_request_also_after_a_restart(users, tmp_path):
    alice, bob = await _alice_and_bob(users, tmp_path)
    sent = Sent(alice.client)
    gid = (await alice.groups.create()).group_id
    key = alice.groups.group_key(gid)
    assert key is not None and len(key) == 32
    [create] = [r for r in sent.requests if r.method == "POST" and r.url.path == "/v1/groups"]
    assert create.headers[GROUP_KEY_HEADER] == b64u(key)
    saved = json.loads((tmp_path / "alice" / "group_client.json").read_text())
    assert saved["group_keys"] == {b64u(gid): b64u(key)}

    sent.clear()
    await alice.groups.invite(gid, [bob.user_id])
    [commit] = [r for r in sent.on_group(gid) if r.url.path.endswith("/commits")]
    assert commit.headers[GROUP_KEY_HEADER] == b64u(key)
    wrap = commit.headers[GROUP_KEY_WRAP_HEADER]
    # bob's Welcome event from a server that does not seal yet has no wrap: a legacy join,
    # no key; the wrap alice sent opens with his exporter of the epoch he joined.
    assert [e.kind for e in await bob.sync()] == ["joined"]
    assert bob.groups.group_key(gid) is None
    bob_group = bob.groups.group(gid)
    assert unwrap_group_key(wrap, gid, wrap_key_of(bob_group.export_secret, gid)) == key

    # alice starts again from her home: the key is read back and presented.
    again = member(users.track(RoostClient.open(tmp_path / "alice")))
    resent = Sent(again.client)
    assert again.groups.group_key(gid) == key
    await again.groups.send(gid, "after a restart")
    await again.groups.info(gid)
    await again.groups.set_policy(gid, "all")
    await again.groups.promote(gid, bob.user_id)
    assert gid in {s.group_id for s in await again.groups.list()}
    await again.groups.commit(gid)  # an update: no Welcome, so no wrap
    on_group = resent.on_group(gid)
    kinds = {(r.method, (r.url.path.split(b64u(gid))[1] + "/").split("/")[1]) for r in on_group}
    assert kinds >= {
        ("POST", "messages"),
        ("GET", ""),
        ("PUT", "policy"),
        ("PUT", "roles"),
        ("POST", "commits"),
    }
    assert on_group and all(r.headers.get(GROUP_KEY_HEADER) == b64u(key) for r in on_group)
    assert not any(GROUP_KEY_WRAP_HEADER in r.headers for r in on_group)
    # bob, whose group has no key, sends no key header.
    bob_sent = Sent(bob.client)
    await bob.groups.send(gid, "legacy on my side")
    assert bob_sent.on_group(gid) and not any(
        GROUP_KEY_HEADER in r.headers for r in bob_sent.on_group(gid)
    )

    await again.groups.delete(gid)
    assert again.groups.group_key(gid) is None  # the membership ended: the key goes with it
    saved = json.loads((tmp_path / "alice" / "group_client.json").read_text())
    assert b64u(gid) not in saved["group_keys"]


async def test_a_welcome_with_the_key_wrap_gives_the_joiner_the_key(users, tmp_path):
    alice, bob = await _alice_and_bob(users, tmp_path)
    gid = (await alice.groups.create()).group_id
    key = alice.groups.group_key(gid)
    sent = Sent(alice.client)
    await alice.groups.invite(gid, [bob.user_id], ratchet_tree_in_welcome=False)
    [commit] = [r for r in sent.on_group(gid) if r.url.path.endswith("/commits")]
    welcome = decode_commit_bundle(commit.content).welcome
    wrap = commit.headers[GROUP_KEY_WRAP_HEADER]
    assert welcome is not None

    # The event as a sealing DS delivers it: the wrap copied into the Welcome event.
    def event(w: str) -> DirectEvent:
        return DirectEvent(
            0, "welcome", alice.user_id, None, welcome, group_id=gid, group_key_wrap=w
        )

    bob_sent = Sent(bob.client)
    tampered = ("A" if wrap[0] != "A" else "B") + wrap[1:]
    failed = await bob.groups._sync._join(event(tampered))
    assert failed is not None and failed.kind == "welcome_failed"
    assert "group key" in failed.text and not bob.groups.local_group_ids()
    assert bob.groups.group_key(gid) is None

    joined = await bob.groups._sync._join(event(wrap))
    assert joined is not None and joined.kind == "joined"
    assert bob.groups.group_key(gid) == key
    # The tree (left out of the Welcome) and the queue registration went with the key.
    on_group = bob_sent.on_group(gid)
    assert {r.url.path.rpartition("/")[2] for r in on_group} >= {"group-info", "queue"}
    assert all(r.headers.get(GROUP_KEY_HEADER) == b64u(key) for r in on_group)
    await bob.groups.send(gid, "with the key")
    assert bob_sent.on_group(gid)[-1].headers[GROUP_KEY_HEADER] == b64u(key)
    await alice.sync()
    assert "with the key" in [m for _, m in alice.messages(gid)]


async def test_external_joins_and_resyncs_present_the_key(users, tmp_path):
    alice = member(await users.new("alice", home=Home(tmp_path / "alice")))
    carol = await new_member(users, "carol")
    gid = (await alice.groups.create(external_join=True)).group_id
    key = alice.groups.group_key(gid)
    assert key is not None

    sent = Sent(carol.client)
    event = await carol.groups.join_external(gid, key=key)
    assert event.kind == "joined" and carol.groups.group_key(gid) == key
    paths = {r.url.path.rpartition("/")[2] for r in sent.on_group(gid)}
    assert paths >= {"group-info", "commits"}
    assert all(r.headers.get(GROUP_KEY_HEADER) == b64u(key) for r in sent.on_group(gid))

    sent.clear()
    await carol.groups.resync(gid)  # the key she holds
    assert {r.url.path.rpartition("/")[2] for r in sent.on_group(gid)} >= {
        b64u(gid),
        "group-info",
        "commits",
    }
    assert all(r.headers.get(GROUP_KEY_HEADER) == b64u(key) for r in sent.on_group(gid))
    await alice.sync()
    await alice.groups.send(gid, "hello carol")
    events = await carol.sync()
    assert "hello carol" in [e.message for e in events if e.kind == "message"]


async def test_a_connection_request_carries_the_key_wrap_to_the_responder(users, tmp_path):
    alice = member(await users.new("alice", keypackages=2))
    bob = member(await users.new("bob", keypackages=2, home=Home(tmp_path / "bob")))
    sent = Sent(alice.client)
    conn, gid = await alice.groups.request_connection(bob.user_id)
    key = alice.groups.group_key(gid)
    assert key is not None
    [request] = [r for r in sent.requests if r.url.path.endswith("/request")]
    wrap = request.headers[GROUP_KEY_WRAP_HEADER]
    [commit] = [r for r in sent.on_group(gid) if r.url.path.endswith("/commits")]
    assert commit.headers[GROUP_KEY_HEADER] == b64u(key) and GROUP_KEY_WRAP_HEADER in commit.headers

    # The request event as a DS that passes the wrap on delivers it: bob keeps both (in his
    # home), and accepting joins with the key.
    event = DirectEvent(
        1,
        "connection_request",
        alice.user_id,
        conn.connection_id,
        request.content,
        group_key_wrap=wrap,
    )
    assert (
        await on_connection_event(
            bob.client, bob.groups.store, event, bob.groups._sync.join_welcome
        )
        is None
    )
    saved = json.loads((tmp_path / "bob" / "group_client.json").read_text())
    assert saved["received_wraps"] == {conn.connection_id: wrap}
    bob_sent = Sent(bob.client)
    _, joined = await bob.groups.accept_connection(conn.connection_id)
    assert joined is not None and joined.kind == "joined"
    assert bob.groups.group_key(gid) == key
    [register] = [r for r in bob_sent.on_group(gid) if r.url.path.endswith("/queue")]
    assert register.headers[GROUP_KEY_HEADER] == b64u(key)
    saved = json.loads((tmp_path / "bob" / "group_client.json").read_text())
    assert saved["received_wraps"] == {} and saved["group_keys"] == {b64u(gid): b64u(key)}
