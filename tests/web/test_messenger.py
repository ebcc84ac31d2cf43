"""Two people in two browser contexts use the page served by a real ``roost serve``: they
register, one starts a conversation, the other gets the invitation live and accepts, and they
write to each other; what is checked is what each of them sees."""

from __future__ import annotations

from urllib.parse import urlsplit

from .conftest import PASSWORD, signed_in_pair, signed_up, unique


def _own_origin_only(browser, name: str, url: str) -> None:
    """Every request and socket of the page went to the page's own host and port."""
    seen = browser.call("requests", name=name)
    origin = urlsplit(url).netloc
    assert seen["requests"], "no requests recorded"
    others = [u for u in seen["requests"] if urlsplit(u).netloc != origin]
    assert others == []
    schemes = {urlsplit(u).scheme for u in seen["requests"]}
    assert schemes == {"http", "ws"}  # the page, its API calls, its realtime socket
    # A CSP violation or a script error shows up in the console.
    assert [c for c in seen["console"] if "Content Security Policy" in c or "pageerror" in c] == []
    # Nor any other error: no failed request (e.g. a missing /favicon.ico), no failed step.
    assert [c for c in seen["console"] if c.startswith("error:")] == []


def test_two_browsers_start_a_conversation_and_talk_live(web_server, browser):
    url = web_server.url
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    for name in ("alice", "bob", "carol"):
        browser.open(name, url)
    for name, user in (("alice", alice), ("bob", bob), ("carol", carol)):
        assert browser.sign_in(name, user, PASSWORD, register=True) == {
            "error": None,
            "me": f"{user}@localhost",
        }
    assert browser.call("text", name="bob", selector="#status", wait_for="Online") == "Online"

    r = browser.call("start", name="alice", peer=f"{bob}@localhost")
    assert r == {"error": None}
    waiting = browser.call("text", name="alice", selector="#conversation-status")
    assert waiting == f"Waiting for {bob}@localhost to accept. You can already write."

    # Written before bob accepts: the DS holds it for his device until it joins.
    browser.call("send", name="alice", text="written before you accepted")

    # bob sees the invitation without reloading, and accepts it.
    invitations = browser.call("invitations", name="bob", wait_for=alice)
    assert invitations == [f"{alice}@localhost wants to start a conversation"]
    assert browser.call("accept", name="bob", **{"from": f"{alice}@localhost"}) == {"error": None}
    assert browser.call("invitations", name="bob") == []
    # alice's page learns of the answer live.
    status = browser.call(
        "text", name="alice", selector="#conversation-status", wait_for="End-to-end"
    )
    assert status == f"End-to-end encrypted conversation with {bob}@localhost."

    browser.call("send", name="alice", text="hello bob")
    got = browser.call("messages", name="bob", wait_for="hello bob")
    assert got == [
        {"from": f"{alice}@localhost", "text": "written before you accepted", "mine": False},
        {"from": f"{alice}@localhost", "text": "hello bob", "mine": False},
    ]
    browser.call("send", name="bob", text="hi alice, got it")
    got = browser.call("messages", name="alice", wait_for="hi alice, got it")
    assert got == [
        {"from": "You", "text": "written before you accepted", "mine": True},
        {"from": "You", "text": "hello bob", "mine": True},
        {"from": f"{bob}@localhost", "text": "hi alice, got it", "mine": False},
    ]

    # A second conversation for bob; while he reads it, alice's messages count as unread.
    assert browser.call("start", name="carol", peer=f"{bob}@localhost") == {"error": None}
    browser.call("invitations", name="bob", wait_for=carol)
    browser.call("accept", name="bob", **{"from": f"{carol}@localhost"})
    browser.call("send", name="alice", text="one")
    browser.call("send", name="alice", text="two")
    listed = browser.call("conversations", name="bob", wait_unread=[alice, 2])
    assert listed == [
        {"peer": f"{alice}@localhost", "unread": 2},
        {"peer": f"{carol}@localhost", "unread": 0},
    ]
    browser.call("send", name="carol", text="carol here")
    assert browser.call("messages", name="bob", wait_for="carol here")[-1]["text"] == "carol here"
    browser.call("open_conversation", name="bob", peer=alice)
    texts = [m["text"] for m in browser.call("messages", name="bob", wait_for="two")]
    assert texts == ["written before you accepted", "hello bob", "hi alice, got it", "one", "two"]
    assert browser.call("conversations", name="bob") == [
        {"peer": f"{alice}@localhost", "unread": 0},
        {"peer": f"{carol}@localhost", "unread": 0},
    ]

    for name in ("alice", "bob", "carol"):
        _own_origin_only(browser, name, url)


def test_clear_errors_from_the_server(web_server, browser):
    url = web_server.url
    taken = signed_up(browser, "first", url, "taken")

    browser.open("page", url)
    r = browser.sign_in("page", taken, PASSWORD, register=True)
    assert r["error"] == "That user name is already taken. Pick another one, or log in."
    r = browser.sign_in("page", taken, "not the password")
    assert r["error"] == "Wrong user id or password."
    r = browser.sign_in("page", "Bad Name!", PASSWORD, register=True)
    assert r["error"].startswith("User names are 1 to 63 characters")

    # The right password logs in (as a new device of the same user).
    assert browser.sign_in("page", taken, PASSWORD) == {"error": None, "me": f"{taken}@localhost"}
    r = browser.call("start", name="page", peer=f"{unique('nobody')}@localhost")
    assert r["error"] == "There is no user with that id."
    r = browser.call("start", name="page", peer=f"{taken}@localhost")
    assert r["error"] == "You cannot start a conversation with yourself."


def test_keyboard_only_on_a_phone_sized_screen(web_server, browser):
    url = web_server.url
    browser.open("phone", url, width=375, height=667)
    browser.open("other", url)
    me, friend = unique("phone"), unique("friend")
    assert browser.sign_in("other", friend, PASSWORD, register=True)["error"] is None
    r = browser.sign_in("phone", me, PASSWORD, register=True, keyboard=True)
    assert r == {"error": None, "me": f"{me}@localhost"}
    # After signing in the focus is in the "start a conversation" field: type, Enter.
    browser.call("type_enter", name="phone", text=f"{friend}@localhost")
    browser.call("text", name="phone", selector="#conversation-title", wait_for=friend)
    browser.call("invitations", name="other", wait_for=me)
    browser.call("accept", name="other", **{"from": f"{me}@localhost"})
    # ... and then in the message field.
    browser.call("send", name="phone", text="typed, not clicked", keyboard=True)
    browser.call("messages", name="other", wait_for="typed, not clicked")
    layout = browser.call("layout", name="phone")
    assert layout["scrollWidth"] <= layout["clientWidth"]  # nothing runs off the screen


def test_declined_invitation(web_server, browser):
    alice, bob = signed_in_pair(browser, web_server.url)
    assert browser.call("start", name="alice", peer=f"{bob}@localhost") == {"error": None}
    browser.call("invitations", name="bob", wait_for=alice)
    browser.call("decline", name="bob", **{"from": f"{alice}@localhost"})
    assert browser.call("invitations", name="bob") == []
    assert browser.call("conversations", name="bob") == []
    status = browser.call(
        "text", name="alice", selector="#conversation-status", wait_for="declined"
    )
    assert status == f"{bob}@localhost declined the conversation; it was deleted."


def test_a_start_that_fails_part_way_can_be_tried_again(web_server, browser):
    alice, bob = signed_in_pair(browser, web_server.url)
    lost = "The server cannot be reached. Check your connection and try again."
    # First the commit adding bob is lost, then (on the second try) the connection request:
    # each time the connection is already open and bob's KeyPackages already claimed.
    for step in ("/commits", "/request"):
        browser.call("drop_next", name="alice", method="POST", path=step)
        assert browser.call("start", name="alice", peer=f"{bob}@localhost") == {"error": lost}
    assert browser.call("start", name="alice", peer=f"{bob}@localhost") == {"error": None}
    browser.call("invitations", name="bob", wait_for=alice)
    assert browser.call("accept", name="bob", **{"from": f"{alice}@localhost"}) == {"error": None}
    browser.call("send", name="bob", text="got through in the end")
    browser.call("messages", name="alice", wait_for="got through in the end")
    assert browser.call("conversations", name="alice") == [
        {"peer": f"{bob}@localhost", "unread": 0}
    ]
