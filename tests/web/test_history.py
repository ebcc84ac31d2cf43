"""A page keeps its device in IndexedDB: reloading it mid-conversation brings back the
conversation list and the history, and new messages keep arriving both ways. What it stores
is encrypted under a key the page cannot read out: no message text and no token in it."""

from __future__ import annotations

import json

from .conftest import signed_up, talking_pair


def test_reload_keeps_history_and_keeps_receiving(web_server, browser):
    alice, bob = talking_pair(browser, web_server.url)
    browser.call("send", name="alice", text="first, before any reload")
    browser.call("messages", name="bob", wait_for="first, before any reload")
    browser.call("send", name="bob", text="second, from bob")
    browser.call("messages", name="alice", wait_for="second, from bob")

    # bob reloads: signed in again without a password, as the same device.
    assert browser.call("reload", name="bob") == {"error": None, "me": f"{bob}@localhost"}
    assert browser.call("conversations", name="bob") == [
        {"peer": f"{alice}@localhost", "unread": 0}
    ]
    browser.call("open_conversation", name="bob", peer=alice)
    assert browser.call("messages", name="bob") == [
        {"from": f"{alice}@localhost", "text": "first, before any reload", "mine": False},
        {"from": "You", "text": "second, from bob", "mine": True},
    ]
    browser.call("text", name="bob", selector="#status", wait_for="Online")

    # Both directions still work from the restored group state.
    browser.call("send", name="alice", text="third, after bob reloaded")
    browser.call("messages", name="bob", wait_for="third, after bob reloaded")
    browser.call("send", name="bob", text="fourth, from the reloaded page")
    browser.call("messages", name="alice", wait_for="fourth, from the reloaded page")

    # A message written while alice's page is reloading reaches her afterwards.
    assert browser.call("reload", name="alice")["error"] is None
    browser.call("send", name="bob", text="fifth, while alice was away")
    browser.call("open_conversation", name="alice", peer=bob)
    got = browser.call("messages", name="alice", wait_for="fifth, while alice was away")
    assert [(m["text"], m["mine"]) for m in got] == [
        ("first, before any reload", True),
        ("second, from bob", False),
        ("third, after bob reloaded", True),
        ("fourth, from the reloaded page", False),
        ("fifth, while alice was away", False),
    ]
    # And a second reload of bob still has all of it.
    assert browser.call("reload", name="bob")["error"] is None
    browser.call("open_conversation", name="bob", peer=alice)
    texts = [m["text"] for m in browser.call("messages", name="bob")]
    assert texts[-1] == "fifth, while alice was away" and len(texts) == 5


def test_stored_state_holds_no_plaintext_or_token(web_server, browser):
    alice, bob = talking_pair(browser, web_server.url)
    secret = "the plaintext that must never be stored"
    browser.call("send", name="alice", text=secret)
    browser.call("messages", name="bob", wait_for=secret)
    browser.call("send", name="bob", text="an answer, also never stored")
    browser.call("messages", name="alice", wait_for="an answer, also never stored")

    for name, user in (("alice", alice), ("bob", bob)):
        stored = browser.call("stored", name=name)
        assert list(stored) == ["roost/device"]
        records = dict(stored["roost/device"])
        assert sorted(records) == ["key", "record"]
        # The key is a CryptoKey the page cannot export.
        assert records["key"] == {
            "cryptoKey": {
                "extractable": False,
                "algorithm": "AES-GCM",
                "usages": ["encrypt", "decrypt"],
            }
        }
        dump = json.dumps(stored, ensure_ascii=False)
        tokens = browser.call("tokens", name=name)
        assert tokens, "the page sent no bearer token"
        for plain in (secret, "an answer, also never stored", user, "@localhost", *tokens):
            assert plain not in dump
        assert len(records["record"]["iv"]["bytes"]) == 12
        assert len(records["record"]["data"]["bytes"]) > 1000  # keys, states, messages


def test_a_second_tab_does_not_take_the_stored_device(web_server, browser):
    url = web_server.url
    user = signed_up(browser, "first", url, "tabs")
    browser.call("open_tab", name="second", of="first", url=url + "/")
    refused = browser.call("text", name="second", selector="#auth-error", wait_for="another tab")
    assert refused == (
        "Roost is already open in another tab of this browser: use that tab, "
        "or close it and reload this one."
    )
    # Once the first tab is gone, a reload of the second resumes the device.
    browser.call("close_page", name="first")
    assert browser.call("reload", name="second") == {"error": None, "me": f"{user}@localhost"}
