"""Finding people: a user searches the directory by name from the page, sees only users who
chose to be listed, and starts a conversation with one of them from the results."""

from __future__ import annotations

import uuid

from .conftest import PASSWORD, unique


def test_search_the_directory_and_start_a_conversation_from_a_result(web_server, browser):
    url = web_server.url
    tag = uuid.uuid4().hex[:8]  # in every display name here, so the search finds only these
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    for name, user in (("alice", alice), ("bob", bob), ("carol", carol)):
        browser.open(name, url)
        assert browser.sign_in(name, user, PASSWORD, register=True)["error"] is None
    # bob is listed; carol has a matching name but is not listed.
    r = browser.call("settings", name="bob", display_name=f"Bob {tag}", discoverable=True)
    assert r["error"] is None
    r = browser.call("settings", name="carol", display_name=f"Carol {tag}", discoverable=False)
    assert r["error"] is None

    got = browser.call("find", name="alice", query=tag.upper())  # case does not matter
    assert got == {
        "error": None,
        "status": "1 found.",
        "found": [f"Bob {tag} ({bob}@localhost)"],
    }
    nobody = browser.call("find", name="alice", query=carol)
    assert nobody == {
        "error": None,
        "status": "Nobody listed in the directory matches.",
        "found": [],
    }
    # By the start of the user name, too.
    assert browser.call("find", name="alice", query=bob)["found"] == [
        f"Bob {tag} ({bob}@localhost)"
    ]

    # A result's Start button opens the conversation; bob gets the invitation live.
    assert browser.call("start_found", name="alice", user=f"{bob}@localhost") == {"error": None}
    browser.call("invitations", name="bob", wait_for=alice)
    assert browser.call("accept", name="bob", **{"from": f"{alice}@localhost"}) == {"error": None}
    browser.call("send", name="alice", text="found you")
    assert browser.call("messages", name="bob", wait_for="found you")[-1]["text"] == "found you"

    # Switching the listing off takes bob out of the results.
    assert browser.call("settings", name="bob", discoverable=False)["error"] is None
    assert browser.call("find", name="alice", query=tag)["found"] == []
