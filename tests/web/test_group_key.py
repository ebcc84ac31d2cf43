"""Group keys in the page: every conversation it makes (a group, and a conversation of two
started by connection request) gets a random 32-byte key, sent with the group's creation and
every request on the group (across a reload: the key is kept inside the encrypted device
record), and given to joiners wrapped under the MLS exporter of the epoch they join: on the
commit with the Welcome, or on the connection request that carries it. The server hands the
wrap on in the ``welcome`` or ``connection_request`` event. A second page joining holds the
same key; Python's MLS opens the page's wrap to the same bytes; a Python user's keyed
conversation of two, accepted in the page, works; a wrap that does not open (the test makes
one under another key) refuses the invitation, in words, and one that opens to another key
than the group's gets the server's refusal, in words."""

from __future__ import annotations

import base64
import os
from urllib.parse import quote

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from roost.client.group_key import GROUP_KEY_WRAP_HEADER, wrap_group_key, wrap_key_of
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.media_types import MLS_MEDIA_TYPE
from tests.e2e.helpers import Member, sync_until
from tests.integration.harness import ServerProcess

from .conftest import python_user, signed_up, talking_pair
from .driver import Browser

GROUPS = "/v1/groups"


def b64u_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64u_of(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def keyed_requests(browser: Browser, name: str) -> list[list]:
    """Page ``name``'s requests on groups: [method, path, group key, key wrap]."""
    return browser.call("group_keys", name=name)["requests"]


def group_path(requests: list[list], key: str) -> str:
    """The path of the one group created with ``key``."""
    assert len([r for r in requests if r[:2] == ["POST", GROUPS] and r[2] == key]) == 1
    [commit] = [r for r in requests if r[1].endswith("/commits") and r[2] == key and r[3]]
    return commit[1].removesuffix("/commits")


def on_group(requests: list[list], path: str) -> list[list]:
    return [r for r in requests if r[1] == path or r[1].startswith(path + "/")]


def test_a_group_key_goes_with_every_request_survives_a_reload_and_reaches_the_joiner(
    web_server: ServerProcess, browser: Browser
) -> None:
    url = web_server.url
    alice, bob = talking_pair(browser, url)
    ids = {"alice": f"{alice}@localhost", "bob": f"{bob}@localhost"}

    group = "Keyed group"
    assert browser.call("create_group", name="alice", group=group, members=ids["bob"]) == {
        "error": None
    }
    browser.call("text", name="bob", selector="#conversations", wait_for=group)
    browser.call("open_conversation", name="bob", peer=group)
    browser.call("send", name="bob", text="sealed hello")
    browser.call("messages", name="alice", wait_for="sealed hello")
    browser.call("send", name="alice", text="and back")
    browser.call("messages", name="bob", wait_for="and back")
    browser.call("group_action", name="alice", label=f"Make {ids['bob']} admin")
    browser.call("members", name="alice", wait_for=f"{ids['bob']} · admin")

    stored = browser.call("group_keys", name="alice")["stored"]
    key = stored[group]
    assert key is not None and len(b64u_bytes(key)) == 32
    # The conversation of two has its own key, which bob's page unwrapped from the request.
    pair_key = stored[ids["bob"]]
    assert pair_key is not None and len(b64u_bytes(pair_key)) == 32 and pair_key != key
    assert browser.call("group_keys", name="bob")["stored"][ids["alice"]] == pair_key

    sent = keyed_requests(browser, "alice")
    path = group_path(sent, key)
    # Every request on the group carries its key; the commit with the Welcome also the wrap
    # (nonce, key, tag: 60 bytes); nothing on the group goes without the key.
    mine = on_group(sent, path)
    assert {(m, p.removeprefix(path)) for m, p, _, _ in mine} >= {
        ("POST", "/commits"),
        ("POST", "/messages"),
        ("PUT", f"/roles/{quote(ids['bob'], safe='')}"),
        ("GET", ""),
    }
    assert all(k == key for _, _, k, _ in mine)
    [wrap] = [w for _, _, _, w in mine if w is not None]
    assert len(b64u_bytes(wrap)) == 60
    # The conversation of two's requests carry its key; its connection request the wrap.
    others = [r for r in sent if r[1].startswith(GROUPS + "/") and not r[1].startswith(path)]
    assert others and all(k == pair_key for _, _, k, _ in others)
    [request] = [r for r in sent if r[1].startswith("/v1/connections/")]
    assert request[0] == "POST" and request[2] is None and len(b64u_bytes(request[3])) == 60
    bobs_pair = [r for r in keyed_requests(browser, "bob") if not r[1].startswith(path)]
    assert ["PUT", others[0][1].split("/commits")[0] + "/queue"] in [r[:2] for r in bobs_pair]
    assert all(k == pair_key for _, _, k, _ in bobs_pair)

    # bob's page unwrapped the same key, keeps it, and presents it.
    assert browser.call("group_keys", name="bob")["stored"][group] == key
    bobs = on_group(keyed_requests(browser, "bob"), path)
    assert {(m, p.removeprefix(path)) for m, p, _, _ in bobs} >= {
        ("PUT", "/queue"),
        ("POST", "/messages"),
    }
    assert all(k == key for _, _, k, _ in bobs)

    # After a reload the page still holds the key and sends it.
    before = len(keyed_requests(browser, "alice"))
    assert browser.call("reload", name="alice")["error"] is None
    browser.call("open_conversation", name="alice", peer=group)
    browser.call("send", name="alice", text="after a reload")
    browser.call("messages", name="bob", wait_for="after a reload")
    after = on_group(keyed_requests(browser, "alice")[before:], path)
    assert ["POST", f"{path}/messages", key, None] in after
    assert all(k == key for _, _, k, _ in after)

    # The key is kept only inside the encrypted record and is never logged.
    for name in ("alice", "bob"):
        assert key not in str(browser.call("stored", name=name))
        assert browser.call("web_storage", name=name) == {"local": {}, "session": {}}
        assert not any(key in line for line in browser.call("requests", name=name)["console"])


async def test_python_mls_opens_the_pages_wrap_to_the_pages_key(
    web_server: ServerProcess, browser: Browser
) -> None:
    url = web_server.url
    py = await python_user(url, "py")
    try:
        signed_up(browser, "alice", url, "web")
        assert browser.call("start", name="alice", peer=py.user_id) == {"error": None}
        [conn] = [c for c in await py.client.connections() if c.state == "pending"]
        _, pair = await py.groups.accept_connection(conn.connection_id)
        # Python unwrapped the conversation of two's key from the request's event.
        assert pair is not None and pair.kind == "joined"
        pair_key = browser.call("group_keys", name="alice")["stored"][py.user_id]
        assert py.groups.group_key(pair.group_id) == b64u_bytes(pair_key)

        group = "Checked by Python"
        made = browser.call("create_group", name="alice", group=group, members=py.user_id)
        assert made == {"error": None}
        joined = await sync_until(py, lambda e: e.kind == "joined")
        gid = joined.group_id

        key = browser.call("group_keys", name="alice")["stored"][group]
        sent = keyed_requests(browser, "alice")
        [wrap] = [w for m, p, _, w in sent if p == f"{GROUPS}/{b64u_of(gid)}/commits" and w]
        # RFC 9420 MLS-Exporter of the epoch the commit made (the one the Python member
        # joined at): AES-256-GCM key; the group id is the associated data.
        wrap_key = py.groups.group(gid).export_secret(b"roost group key", gid, 32)
        raw = b64u_bytes(wrap)
        assert AESGCM(wrap_key).decrypt(raw[:12], raw[12:], gid) == b64u_bytes(key)
    finally:
        await py.client.aclose()


async def test_a_python_users_keyed_conversation_of_two_is_accepted_in_the_page(
    web_server: ServerProcess, browser: Browser
) -> None:
    url = web_server.url
    py = await python_user(url, "py")
    try:
        bob = signed_up(browser, "bob", url, "web")
        _, gid = await py.groups.request_connection(f"{bob}@localhost")
        key = py.groups.group_key(gid)
        assert key is not None
        browser.call("invitations", name="bob", wait_for=py.user_id)
        assert browser.call("accept", name="bob", **{"from": py.user_id}) == {"error": None}
        await sync_until(py, lambda e: e.kind == "connected")

        # The page took the key from the request's wrap and presents it on everything.
        assert browser.call("group_keys", name="bob")["stored"][py.user_id] == b64u_of(key)
        browser.call("send", name="bob", text="keyed both ways")
        await sync_until(py, lambda e: e.message == "keyed both ways")
        await py.groups.send(gid, "and back")
        browser.call("messages", name="bob", wait_for="and back")
        mine = on_group(keyed_requests(browser, "bob"), f"{GROUPS}/{b64u_of(gid)}")
        assert {m for m, _, _, _ in mine} >= {"PUT", "POST"}
        assert all(k == b64u_of(key) for _, _, k, _ in mine)
    finally:
        await py.client.aclose()


def bad_wrap(py: Member, gid: bytes, wrap_key: bytes, wrong: str) -> str:
    """A well-formed wrap (the server hands it on as it is) that is wrong: ``"wrap_key"``, the
    group's key under another key than the joiners' exporter (it does not open); ``"key"``,
    another key than the group's under the right one (it opens, to a key the DS refuses)."""
    key = py.groups.group_key(gid)
    assert key is not None
    if wrong == "wrap_key":
        return wrap_group_key(key, gid, os.urandom(32))
    return wrap_group_key(os.urandom(32), gid, wrap_key)


async def added_by_hand(
    py: Member, gid: bytes, kps: list, wrong: str, *, on_commit: bool = True
) -> tuple[bytes, str]:
    """Commit adding ``kps`` to ``py``'s group ``gid`` by hand, as a client that wraps badly
    would: the wrap (``bad_wrap``) goes on the commit unless not ``on_commit``. The Welcome and
    the wrap."""
    group = py.groups.group(gid)
    out = group.commit(add=kps)
    assert out.welcome is not None
    wrap = bad_wrap(py, gid, wrap_key_of(group.pending_export_secret, gid), wrong)
    headers = py.groups.key_headers(gid)
    if on_commit:
        headers[GROUP_KEY_WRAP_HEADER] = wrap
    await py.client.request(
        "POST",
        f"{GROUPS}/{b64u_of(gid)}/commits",
        content=encode_commit_bundle(out.commit, out.group_info, out.welcome),
        content_type=MLS_MEDIA_TYPE,
        headers=headers,
    )
    group.merge_pending_commit()
    return out.welcome, wrap


async def requested_by_hand(py: Member, user_id: str, wrong: str) -> str:
    """A connection request of ``py`` to ``user_id`` with the Welcome to a new keyed group
    and a wrong wrap (``bad_wrap``); the connection id."""
    conn = await py.client.open_connection(user_id)
    kps = await py.client.claim_key_packages(user_id)
    gid = (await py.groups.create()).group_id
    welcome, wrap = await added_by_hand(py, gid, kps, wrong, on_commit=False)
    await py.client.send_connection_request(conn.connection_id, welcome, group_key_wrap=wrap)
    return conn.connection_id


async def test_a_connection_request_whose_key_does_not_open_is_refused_in_words(
    web_server: ServerProcess, browser: Browser
) -> None:
    url = web_server.url
    py = await python_user(url, "py")
    try:
        bob = signed_up(browser, "bob", url, "web")
        conn_id = await requested_by_hand(py, f"{bob}@localhost", "wrap_key")
        browser.call("invitations", name="bob", wait_for=py.user_id)
        said = browser.call("accept", name="bob", **{"from": py.user_id})
        assert said == {
            "error": f"The invitation from {py.user_id} cannot be accepted: its group key does "
            "not open with the invitation's secrets."
        }
        # Nothing was accepted: the request still waits for an answer, and can be declined.
        [pending] = [c for c in await py.client.connections() if c.state != "accepted"]
        assert pending.connection_id == conn_id
        browser.call("decline", name="bob", **{"from": py.user_id})
    finally:
        await py.client.aclose()


async def test_a_wrong_key_from_a_connection_request_is_refused_by_the_server_in_words(
    web_server: ServerProcess, browser: Browser
) -> None:
    url = web_server.url
    py = await python_user(url, "py")
    try:
        bob = signed_up(browser, "bob", url, "web")
        await requested_by_hand(py, f"{bob}@localhost", "key")
        browser.call("invitations", name="bob", wait_for=py.user_id)
        # The wrap opens, to a key the group is not sealed under: the DS refuses the page's
        # queue, and the page says so.
        said = browser.call("accept", name="bob", **{"from": py.user_id})
        assert said == {
            "error": "The server did not accept this browser's key to this conversation: it is "
            "not the one the conversation is sealed under. Ask a member to invite you again."
        }
    finally:
        await py.client.aclose()


async def test_a_welcome_whose_key_does_not_open_is_refused_in_words(
    web_server: ServerProcess, browser: Browser
) -> None:
    url = web_server.url
    py = await python_user(url, "py")
    try:
        bob = signed_up(browser, "bob", url, "web")
        await py.groups.request_connection(f"{bob}@localhost")
        browser.call("invitations", name="bob", wait_for=py.user_id)
        assert browser.call("accept", name="bob", **{"from": py.user_id}) == {"error": None}
        await sync_until(py, lambda e: e.kind == "connected")

        gid = (await py.groups.create()).group_id
        kps = await py.client.claim_key_packages(f"{bob}@localhost")
        await added_by_hand(py, gid, kps, "wrap_key")
        said = browser.call("text", name="bob", selector="#refusals", wait_for="was refused")
        assert said == (
            f"An invitation from {py.user_id} to a group was refused: its group key does not "
            "open with the invitation's secrets."
        )
        assert len(browser.call("group_keys", name="bob")["stored"]) == 1
        # The page goes on: the conversation of two still works.
        browser.call("open_conversation", name="bob", peer=py.user_id)
        browser.call("send", name="bob", text="still here")
        await sync_until(py, lambda e: e.message == "still here")
    finally:
        await py.client.aclose()
