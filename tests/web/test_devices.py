"""A browser becomes a new device of an existing account when another device of the user
approves it (comparing the key fingerprint both pages show); the approving page then adds it
to the user's conversations, so it reads and writes there. A denied request signs nothing in."""

from __future__ import annotations

from .conftest import PASSWORD, screenshot, talking_pair, unique


def test_approved_browser_joins_the_users_conversations(web_server, browser):
    alice, bob = talking_pair(browser, web_server.url)
    browser.call("send", name="alice", text="before the second device")
    browser.call("messages", name="bob", wait_for="before the second device")

    # A second browser (its own storage) asks to be added to alice's account.
    browser.open("alice2", web_server.url)
    asked = browser.call("request_device", name="alice2", user=alice)
    assert asked["error"] is None
    fingerprint = asked["fingerprint"]
    assert len(fingerprint.split()) == 8
    screenshot(browser, "alice2", "device-waiting.png")

    # alice's signed-in page lists the request with the same fingerprint, and approves it.
    listed = browser.call("device_requests", name="alice", wait_for=fingerprint)
    assert listed == [f"Web browser: {fingerprint}"]
    screenshot(browser, "alice", "device-approval.png")
    decided = browser.call("decide_device", name="alice", fingerprint=fingerprint, approve=True)
    assert decided == {"error": None, "status": "The new device was added to 1 conversation."}
    assert browser.call("device_requests", name="alice") == []

    # The new page is signed in as alice, a client of its own, in the conversation with bob.
    assert browser.call("device_outcome", name="alice2") == {
        "error": None,
        "chat": True,
        "me": f"{alice}@localhost",
    }
    browser.call("open_conversation", name="alice2", peer=bob)

    # Messages written from now on reach it, and what it writes reaches bob (and alice).
    browser.call("send", name="bob", text="hello to both of your devices")
    got = browser.call("messages", name="alice2", wait_for="hello to both of your devices")
    assert got == [
        {"from": f"{bob}@localhost", "text": "hello to both of your devices", "mine": False}
    ]
    browser.call("messages", name="alice", wait_for="hello to both of your devices")
    browser.call("send", name="alice2", text="written on the new browser")
    got = browser.call("messages", name="bob", wait_for="written on the new browser")
    assert got[-1] == {"from": f"{alice}@localhost", "text": "written on the new browser", "mine": False}
    browser.call("messages", name="alice", wait_for="written on the new browser")
    screenshot(browser, "bob", "conversation.png")
    assert browser.call("conversations", name="alice2") == [{"peer": f"{bob}@localhost", "unread": 0}]
    screenshot(browser, "alice2", "conversation-list.png")

    # Logging the new browser out removes that device; a reload stays signed out.
    out = browser.call("log_out", name="alice2")
    assert out["error"] is None
    assert out["status"].startswith("Logged out: this device was removed from your account")
    assert browser.call("reload", name="alice2", signed_out=True) == {"chat": False, "error": None}


def test_denied_request_leaves_the_browser_signed_out(web_server, browser):
    alice = unique("alice")
    browser.open("alice", web_server.url)
    assert browser.sign_in("alice", alice, PASSWORD, register=True)["error"] is None

    browser.open("other", web_server.url)
    unknown = browser.call("request_device", name="other", user=unique("nobody"))
    assert unknown["error"] == "There is no user with that id."
    asked = browser.call("request_device", name="other", user=alice)
    assert asked["error"] is None
    browser.call("device_requests", name="alice", wait_for=asked["fingerprint"])
    decided = browser.call("decide_device", name="alice", fingerprint=asked["fingerprint"], approve=False)
    assert decided == {"error": None, "status": "Denied: that device was not added."}

    assert browser.call("device_outcome", name="other") == {
        "error": "Your other device denied the request: this browser was not added to the account.",
        "chat": False,
    }
    assert browser.call("reload", name="other", signed_out=True) == {"chat": False, "error": None}

    # The account's only device logs out: the browser forgets it (the server keeps it).
    out = browser.call("log_out", name="alice")
    assert out["error"] is None and "only device" in out["status"]
    assert browser.call("reload", name="alice", signed_out=True) == {"chat": False, "error": None}
