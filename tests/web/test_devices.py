"""A browser becomes a new device of an existing account when another device of the user
approves it (comparing the key fingerprint both pages show); the approving page then adds it
to the user's conversations, so it reads and writes there. A denied request signs nothing in."""

from __future__ import annotations

from .conftest import screenshot, signed_in_pair, signed_up, talking_pair, unique


def test_approved_browser_joins_the_users_conversations(web_server, browser):
    alice, bob = talking_pair(browser, web_server.url)
    browser.call("send", name="alice", text="before the second device")
    browser.call("messages", name="bob", wait_for="before the second device")
    group = "Book club"
    assert browser.call("create_group", name="alice", group=group, members=f"{bob}@localhost") == {
        "error": None
    }
    browser.call("text", name="bob", selector="#conversations", wait_for=group)
    browser.call("open_conversation", name="alice", peer=bob)

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
    assert decided == {"error": None, "status": "The new device was added to 2 conversations."}
    assert browser.call("device_requests", name="alice") == []
    devices = browser.call("own_devices", name="alice")
    assert len(devices) == 2 and fingerprint in devices

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
    assert got[-1] == {
        "from": f"{alice}@localhost",
        "text": "written on the new browser",
        "mine": False,
    }
    browser.call("messages", name="alice", wait_for="written on the new browser")
    screenshot(browser, "bob", "conversation.png")

    # The group too: the new device reads it under its name, with alice's role.
    browser.call("open_conversation", name="bob", peer=group)
    browser.call("send", name="bob", text="the group sees your new browser")
    browser.call("open_conversation", name="alice2", peer=group)
    browser.call("messages", name="alice2", wait_for="the group sees your new browser")
    assert browser.call("members", name="alice2", wait_for="admin") == [
        f"{alice}@localhost (you) · admin",
        f"{bob}@localhost",
    ]

    # It is a device like any other: a reload signs it in again, with both conversations.
    assert browser.call("reload", name="alice2") == {"error": None, "me": f"{alice}@localhost"}
    assert sorted(c["peer"] for c in browser.call("conversations", name="alice2")) == sorted(
        [f"{bob}@localhost", group]
    )
    screenshot(browser, "alice2", "conversation-list.png")

    # Logging the new browser out removes that device; a reload stays signed out.
    out = browser.call("log_out", name="alice2")
    assert out["error"] is None
    assert out["status"].startswith("Logged out: this device was removed from your account")
    assert browser.call("reload", name="alice2", signed_out=True) == {"chat": False, "error": None}
    assert browser.call("own_devices", name="alice") == [devices[1 - devices.index(fingerprint)]]
    # The server had it removed from the conversations; they go on without it.
    browser.call("open_conversation", name="bob", peer=alice)
    browser.call("send", name="bob", text="after the new browser left")
    browser.call("messages", name="alice", wait_for="after the new browser left")


def test_denied_request_leaves_the_browser_signed_out(web_server, browser):
    alice = signed_up(browser, "alice", web_server.url, "alice")

    (this_browser,) = browser.call("own_devices", name="alice")
    assert this_browser.endswith(" (this browser)")
    browser.open("other", web_server.url)
    unknown = browser.call("request_device", name="other", user=unique("nobody"))
    assert unknown["error"] == "There is no user with that id."
    asked = browser.call("request_device", name="other", user=alice)
    assert asked["error"] is None
    browser.call("device_requests", name="alice", wait_for=asked["fingerprint"])
    decided = browser.call(
        "decide_device", name="alice", fingerprint=asked["fingerprint"], approve=False
    )
    assert decided == {"error": None, "status": "Denied: that device was not added."}

    assert browser.call("device_outcome", name="other") == {
        "error": "Your other device denied the request: this browser was not added to the account.",
        "chat": False,
    }
    assert browser.call("reload", name="other", signed_out=True) == {"chat": False, "error": None}

    # Asked again and approved (no conversations to add it to); then alice removes it.
    asked = browser.call("request_device", name="other", user=alice)
    browser.call("device_requests", name="alice", wait_for=asked["fingerprint"])
    decided = browser.call(
        "decide_device", name="alice", fingerprint=asked["fingerprint"], approve=True
    )
    assert decided == {"error": None, "status": "The new device was added to 0 conversations."}
    assert browser.call("device_outcome", name="other")["me"] == f"{alice}@localhost"
    devices = browser.call("own_devices", name="alice")
    assert sorted(devices) == sorted([asked["fingerprint"], this_browser])
    removed = browser.call("remove_device", name="alice", fingerprint=asked["fingerprint"])
    assert removed["error"] is None
    assert browser.call("own_devices", name="alice") == [this_browser]
    # The removed browser cannot sign in with its stored device any more, and forgets it.
    again = browser.call("reload", name="other")
    assert again["error"].startswith("Could not resume your saved session")
    assert browser.call("reload", name="other", signed_out=True) == {"chat": False, "error": None}

    # The account's only device logs out: the browser forgets it (the server keeps it).
    out = browser.call("log_out", name="alice")
    assert out["error"] is None and "only device" in out["status"]
    assert browser.call("reload", name="alice", signed_out=True) == {"chat": False, "error": None}


def test_device_added_before_the_peer_accepted(web_server, browser):
    # alice's conversation with bob is still waiting for bob when her new browser is added.
    alice, bob = signed_in_pair(browser, web_server.url)
    assert browser.call("start", name="alice", peer=f"{bob}@localhost") == {"error": None}
    browser.open("alice2", web_server.url)
    asked = browser.call("request_device", name="alice2", user=alice)
    browser.call("device_requests", name="alice", wait_for=asked["fingerprint"])
    decided = browser.call(
        "decide_device", name="alice", fingerprint=asked["fingerprint"], approve=True
    )
    assert decided == {"error": None, "status": "The new device was added to 1 conversation."}
    assert browser.call("device_outcome", name="alice2")["error"] is None
    browser.call("open_conversation", name="alice2", peer=bob)

    # bob accepts the Welcome of before the Add, and then reads the Add like any commit.
    browser.call("invitations", name="bob", wait_for=alice)
    assert browser.call("accept", name="bob", **{"from": f"{alice}@localhost"}) == {"error": None}
    browser.call("send", name="bob", text="accepted after your new device came")
    browser.call("messages", name="alice2", wait_for="accepted after your new device came")
    browser.call("messages", name="alice", wait_for="accepted after your new device came")
    browser.call("send", name="alice2", text="and the new device answers")
    browser.call("messages", name="bob", wait_for="and the new device answers")
