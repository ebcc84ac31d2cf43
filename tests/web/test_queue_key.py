"""A page's group queue is read with its own key: the page keeps the key inside its encrypted
device record, sends it only where its queue is named (registering the queue with a group, the
socket's hello), says so when the server refuses it, and a device saved by a page from before
queue keys claims one."""

from __future__ import annotations

import base64
import json
import sqlite3

import httpx

from .conftest import talking_pair


def b64u_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def queue_of(browser, name: str) -> tuple[str, str]:
    """The queue id and key page ``name`` gave its latest socket (in the hello or, for a
    queue made while connected, a subscribe frame): the page is in one conversation."""
    sockets = browser.call("queue_keys", name=name)["sockets"]
    assert sockets, f"{name} sent no hello"
    [(queue_id, key)] = sockets[-1].items()
    return queue_id, key


def test_the_key_goes_only_where_the_queue_is_named_and_is_stored_encrypted(web_server, browser):
    talking_pair(browser, web_server.url)
    browser.call("send", name="alice", text="through a keyed queue")
    browser.call("messages", name="bob", wait_for="through a keyed queue")
    browser.call("send", name="bob", text="and back")
    browser.call("messages", name="alice", wait_for="and back")

    keys = {}
    for name in ("alice", "bob"):
        queue_id, key = queue_of(browser, name)
        assert len(b64u_bytes(key)) == 32
        sent = browser.call("queue_keys", name=name)
        # Every socket of the page was given the same queue with the same key (the first one
        # in a subscribe frame: the queue was made with the conversation).
        assert all(s == {queue_id: key} for s in sent["sockets"])
        assert all(h in ({}, {queue_id: key}) for h in sent["hellos"])
        # alice made the group with her queue; bob registered his after the Welcome.
        [(method, path, header)] = sent["requests"]
        assert header == key
        if name == "alice":
            assert (method, path) == ("POST", "/v1/groups")
        else:
            assert method == "PUT" and path.startswith("/v1/groups/") and path.endswith("/queue")
        keys[name] = key

        # Kept only inside the encrypted record: not in IndexedDB as text, not in web
        # storage, not in the console.
        assert key not in json.dumps(browser.call("stored", name=name))
        assert browser.call("web_storage", name=name) == {"local": {}, "session": {}}
        assert not any(key in line for line in browser.call("requests", name=name)["console"])
    assert keys["alice"] != keys["bob"]


def test_a_page_whose_queue_is_gone_says_so(web_server, browser):
    url = web_server.url
    alice, _ = talking_pair(browser, url)
    queue_id, key = queue_of(browser, "bob")
    token = browser.call("tokens", name="bob")[-1]
    gone = httpx.delete(
        f"{url}/v1/queues/{queue_id}",
        headers={"Authorization": f"Bearer {token}", "Roost-Queue-Key": key},
    )
    assert gone.status_code == 204

    # The reloaded page offers its stored key; the server refuses the queue in `ready`.
    assert browser.call("reload", name="bob")["error"] is None
    said = browser.call("text", name="bob", selector="#refusals", wait_for="message queue")
    assert said == (
        f"Messages of “{alice}@localhost” cannot reach this browser: its message queue is "
        "gone from the server."
    )
    assert queue_of(browser, "bob") == (queue_id, key)


def test_a_device_saved_before_queue_keys_claims_its_key_once(web_server, browser):
    url = web_server.url
    alice, bob = talking_pair(browser, url)
    queue_id, old_key = queue_of(browser, "bob")
    token = browser.call("tokens", name="bob")[-1]
    [client] = httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {token}"}).json()[
        "clients"
    ]
    # The queue as the upgrade leaves one made before keys existed (no key, its creator
    # named), and bob's record as an older page wrote it (the queue id, no key).
    with sqlite3.connect(web_server.data_dir / "roost.db", timeout=30) as db:
        changed = db.execute(
            "UPDATE queues SET key_hash = NULL, push_seal = NULL, legacy_owner = ? WHERE id = ?",
            (client["client_uuid"], b64u_bytes(queue_id)),
        ).rowcount
    assert changed == 1
    assert browser.call("forget_queue_key", name="bob") == {"had": True}

    assert browser.call("reload", name="bob")["error"] is None
    browser.call("text", name="bob", selector="#status", wait_for="Online")
    claimed_id, new_key = queue_of(browser, "bob")
    assert claimed_id == queue_id and new_key != old_key
    claim = f"{url}/v1/queues/{queue_id}/key"
    assert browser.call("requests", name="bob")["requests"].count(claim) == 1
    assert browser.call("text", name="bob", selector="#refusals") == ""

    # The same conversation goes on through the same queue, both ways.
    browser.call("send", name="alice", text="after bob's page claimed its key")
    browser.call("open_conversation", name="bob", peer=alice)
    browser.call("messages", name="bob", wait_for="after bob's page claimed its key")
    browser.call("send", name="bob", text="and an answer")
    browser.call("messages", name="alice", wait_for="and an answer")

    # The claimed key was saved: the next load uses it and claims nothing.
    assert browser.call("reload", name="bob")["error"] is None
    browser.call("text", name="bob", selector="#status", wait_for="Online")
    assert queue_of(browser, "bob") == (queue_id, new_key)
    assert browser.call("requests", name="bob")["requests"].count(claim) == 1

    # A conversation started now gets a queue of its own; the older one stays on the shared
    # queue, which the page goes on reading.
    group = "After the upgrade"
    made = browser.call("create_group", name="bob", group=group, members=f"{alice}@localhost")
    assert made == {"error": None}
    browser.call("text", name="alice", selector="#conversations", wait_for=group)
    browser.call("open_conversation", name="alice", peer=group)
    browser.call("send", name="alice", text="in the new group")
    browser.call("messages", name="bob", wait_for="in the new group")
    saved = browser.call("conversation_queues", name="bob")
    assert saved["shared"] == queue_id
    by_peer = {c["peer"]: c["queue"] for c in saved["conversations"]}
    assert by_peer[f"{alice}@localhost"] is None
    assert by_peer[group] not in (None, queue_id)
    browser.call("open_conversation", name="alice", peer=bob)
    browser.call("send", name="alice", text="still on the shared queue")
    browser.call("open_conversation", name="bob", peer=alice)
    browser.call("messages", name="bob", wait_for="still on the shared queue")
