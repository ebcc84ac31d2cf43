"""Group keys in the page: a group conversation it makes gets a random 32-byte key, sent with the
group's creation and every request on the group (across a reload: the key is kept inside the
encrypted device record), and given to joiners wrapped under the MLS exporter of the epoch
they join. A second page joining from the Welcome holds the same key; Python's MLS opens the
page's wrap to the same bytes; a wrap that does not open refuses the invitation, in words.

Until the server copies the committer's wrap into welcome events, ``copy_key_wraps`` does that
step for the joining page (it leaves a server's own ``group_key_wrap`` as it is)."""

from __future__ import annotations

import base64
from urllib.parse import quote

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.e2e.helpers import sync_until
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
    [commit] = [r for r in requests if r[0] == "POST" and r[1].endswith("/commits") and r[3]]
    return commit[1].removesuffix("/commits")


def on_group(requests: list[list], path: str) -> list[list]:
    return [r for r in requests if r[1] == path or r[1].startswith(path + "/")]


def test_a_group_key_goes_with_every_request_survives_a_reload_and_reaches_the_joiner(
    web_server: ServerProcess, browser: Browser
) -> None:
    url = web_server.url
    alice, bob = talking_pair(browser, url)
    ids = {"alice": f"{alice}@localhost", "bob": f"{bob}@localhost"}
    browser.call("copy_key_wraps", name="bob", **{"from": "alice"})
    assert browser.call("reload", name="bob")["error"] is None

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
    # The conversation of two travels by connection request, which has no place for a key's
    # wrap: it stays a group without a key.
    assert stored[ids["bob"]] is None

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
    # The conversation of two's requests carry no key.
    others = [r for r in sent if r[1].startswith(GROUPS + "/") and not r[1].startswith(path)]
    assert others and all(k is None and w is None for _, _, k, w in others)

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
        await py.groups.accept_connection(conn.connection_id)

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


def test_a_welcome_whose_key_does_not_open_is_refused_in_words(
    web_server: ServerProcess, browser: Browser
) -> None:
    url = web_server.url
    alice, bob = talking_pair(browser, url)
    browser.call("copy_key_wraps", name="bob", damage=True, **{"from": "alice"})
    assert browser.call("reload", name="bob")["error"] is None

    group = "Damaged key"
    made = browser.call("create_group", name="alice", group=group, members=f"{bob}@localhost")
    assert made == {"error": None}
    said = browser.call("text", name="bob", selector="#refusals", wait_for="was refused")
    assert said == (
        f"An invitation from {alice}@localhost to a group was refused: its group key does not "
        "open with the invitation's secrets."
    )
    assert group not in browser.call("group_keys", name="bob")["stored"]
    # The page goes on: the conversation of two still works both ways.
    browser.call("open_conversation", name="bob", peer=alice)
    browser.call("send", name="bob", text="still here")
    browser.call("open_conversation", name="alice", peer=bob)
    browser.call("messages", name="alice", wait_for="still here")
