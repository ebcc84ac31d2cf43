"""Group conversations between four browsers: a named group, invitations, messages labelled
with the sender's own credential, promoting an admin, removing a member, the homeserver's
Remove proposals for a deleted account committed by a page, and leaving."""

from __future__ import annotations

import httpx

from .conftest import PASSWORD, unique


def _connect(browser, a: str, b: str, b_user: str, a_user: str) -> None:
    assert browser.call("start", name=a, peer=f"{b_user}@localhost") == {"error": None}
    browser.call("invitations", name=b, wait_for=a_user)
    assert browser.call("accept", name=b, **{"from": f"{a_user}@localhost"}) == {"error": None}


def test_group_conversation_with_roles_removals_and_leaving(web_server, browser):
    url = web_server.url
    users = {n: unique(n) for n in ("alice", "bob", "carol", "dave")}
    ids = {n: f"{u}@localhost" for n, u in users.items()}
    for n, user in users.items():
        browser.open(n, url)
        assert browser.sign_in(n, user, PASSWORD, register=True)["error"] is None
    for n in ("bob", "carol", "dave"):
        _connect(browser, "alice", n, users[n], users["alice"])

    group = "Weekend plans"
    r = browser.call(
        "create_group", name="alice", group=group, members=f"{ids['bob']}, {ids['carol']}"
    )
    assert r == {"error": None}
    assert browser.call("members", name="alice") == [
        f"{ids['alice']} (you) · admin",
        ids["bob"],
        ids["carol"],
    ]
    # bob and carol get the group live, under its name.
    for n in ("bob", "carol"):
        browser.call("conversations", name=n)
        browser.call("text", name=n, selector="#conversations", wait_for=group)
        browser.call("open_conversation", name=n, peer=group)
    assert browser.call("members", name="bob", wait_for="admin") == [
        f"{ids['alice']} · admin",
        f"{ids['bob']} (you)",
        ids["carol"],
    ]
    assert browser.call("invite", name="alice", users=ids["dave"]) == {"error": None}
    browser.call("members", name="alice", wait_for=ids["dave"])
    browser.call("text", name="dave", selector="#conversations", wait_for=group)
    browser.call("open_conversation", name="dave", peer=group)

    # Each message is labelled with its sender, read from the sender's credential.
    browser.call("send", name="bob", text="hi all, bob here")
    browser.call("send", name="dave", text="dave joined late")
    for n in ("alice", "carol"):
        got = browser.call("messages", name=n, wait_for="dave joined late")
        assert [(m["from"], m["text"]) for m in got] == [
            (ids["bob"], "hi all, bob here"),
            (ids["dave"], "dave joined late"),
        ]

    # alice makes bob an admin; bob removes dave.
    browser.call("group_action", name="alice", label=f"Make {ids['bob']} admin")
    browser.call("members", name="alice", wait_for=f"{ids['bob']} · admin")
    browser.call("open_conversation", name="bob", peer=group)  # rereads the roles
    browser.call("members", name="bob", wait_for=f"{ids['bob']} (you) · admin")
    browser.call("group_action", name="bob", label=f"Remove {ids['dave']}")
    browser.call("members", name="bob", wait_gone=ids["dave"])
    browser.call("members", name="alice", wait_gone=ids["dave"])
    browser.call("open_conversation", name="dave", peer=group)
    removed = browser.call(
        "text", name="dave", selector="#conversation-status", wait_for="no longer"
    )
    assert removed == "You are no longer a member of this group."

    # carol deletes her account: the homeserver proposes removing her leaf and a page commits it.
    token = browser.call("tokens", name="carol")[-1]
    resp = httpx.delete(url + "/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 204
    browser.call("members", name="alice", wait_gone=ids["carol"])
    browser.call("members", name="bob", wait_gone=ids["carol"])
    # carol's page, reloaded, cannot sign her deleted device in: it says so and forgets it.
    r = browser.call("reload", name="carol")
    assert r["error"].startswith("Could not resume your saved session: ")
    assert browser.call("stored", name="carol")["roost/device"][0][0] == "key"
    assert len(browser.call("stored", name="carol")["roost/device"]) == 1

    # bob leaves; alice's page commits his proposal, and the two go on without him.
    browser.call("group_action", name="bob", label="Leave group")
    left = browser.call("text", name="bob", selector="#conversation-status", wait_for="left")
    assert left == "You left this group."
    assert browser.call("members", name="alice", wait_gone=ids["bob"]) == [
        f"{ids['alice']} (you) · admin"
    ]
    browser.call("send", name="alice", text="just me now")

    # After a reload the group, its members and its history are still there.
    assert browser.call("reload", name="alice")["error"] is None
    browser.call("open_conversation", name="alice", peer=group)
    assert browser.call("members", name="alice") == [f"{ids['alice']} (you) · admin"]
    texts = [m["text"] for m in browser.call("messages", name="alice")]
    assert texts == ["hi all, bob here", "dave joined late", "just me now"]
