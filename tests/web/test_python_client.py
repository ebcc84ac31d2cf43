"""A browser user and a ``roost.client`` user in one conversation, each side starting it in
turn: the page's ts-mls and Roost's own MLS read each other's Welcomes, commits and messages."""

from __future__ import annotations

from tests.e2e.helpers import sync_until

from .conftest import python_user, signed_up


async def test_browser_invites_a_python_client(web_server, browser):
    url = web_server.url
    bob = await python_user(url)
    try:
        alice = signed_up(browser, "alice", url, "web")
        assert browser.call("start", name="alice", peer=bob.user_id) == {"error": None}

        [conn] = [c for c in await bob.client.connections() if c.state == "pending"]
        assert conn.requester == f"{alice}@localhost"
        _, joined = await bob.groups.accept_connection(conn.connection_id)
        assert joined is not None and joined.kind == "joined"
        gid = joined.group_id
        browser.call("text", name="alice", selector="#conversation-status", wait_for="End-to-end")

        await bob.groups.send(gid, "hello from python")
        got = browser.call("messages", name="alice", wait_for="hello from python")
        assert got == [{"from": bob.user_id, "text": "hello from python", "mine": False}]
        browser.call("send", name="alice", text="hello from the browser")
        event = await sync_until(bob, lambda e: e.kind == "message")
        assert event.message == "hello from the browser"
        assert event.sender.startswith(f"{alice}@localhost/")
    finally:
        await bob.client.aclose()


async def test_python_client_invites_a_browser_user(web_server, browser):
    url = web_server.url
    carol = await python_user(url)
    try:
        dave = signed_up(browser, "dave", url, "web")
        browser.call("text", name="dave", selector="#status", wait_for="Online")

        _, gid = await carol.groups.request_connection(f"{dave}@localhost")
        browser.call("invitations", name="dave", wait_for=carol.user_id)
        assert browser.call("accept", name="dave", **{"from": carol.user_id}) == {"error": None}
        await sync_until(carol, lambda e: e.kind == "connected")

        browser.call("send", name="dave", text="joined from your Welcome")
        event = await sync_until(carol, lambda e: e.kind == "message")
        assert (event.group_id, event.message) == (gid, "joined from your Welcome")
        await carol.groups.send(gid, "and I read you")
        got = browser.call("messages", name="dave", wait_for="and I read you")
        assert [m["text"] for m in got] == ["joined from your Welcome", "and I read you"]
    finally:
        await carol.client.aclose()


async def test_browser_user_in_a_python_clients_group_sees_who_wrote(web_server, browser):
    """A roost.client user makes a group (no name: it is the page's own extension) with a
    browser user and another roost.client user; the page labels each message with its
    sender, read from the sender's credential."""
    url = web_server.url
    carol, erin = await python_user(url), await python_user(url)
    try:
        dave = signed_up(browser, "dave", url, "web")
        browser.call("text", name="dave", selector="#status", wait_for="Online")
        await carol.groups.request_connection(f"{dave}@localhost")
        browser.call("invitations", name="dave", wait_for=carol.user_id)
        assert browser.call("accept", name="dave", **{"from": carol.user_id}) == {"error": None}
        conn, _ = await carol.groups.request_connection(erin.user_id)
        await erin.groups.accept_connection(conn.connection_id)

        group = await carol.groups.create()
        gid = group.group_id
        await carol.groups.invite(gid, [f"{dave}@localhost", erin.user_id])
        await sync_until(erin, lambda e: e.kind == "joined" and e.group_id == gid)
        title = f"Group with {carol.user_id}"
        browser.call("text", name="dave", selector="#conversations", wait_for=title)
        browser.call("open_conversation", name="dave", peer=title)
        assert browser.call("members", name="dave", wait_for="admin") == [
            f"{carol.user_id} · admin",
            f"{dave}@localhost (you)",
            erin.user_id,
        ]

        await erin.groups.send(gid, "erin writing")
        await carol.groups.send(gid, "carol writing")
        got = browser.call("messages", name="dave", wait_for="carol writing")
        assert [(m["from"], m["text"]) for m in got] == [
            (erin.user_id, "erin writing"),
            (carol.user_id, "carol writing"),
        ]
        browser.call("send", name="dave", text="dave from the browser")
        event = await sync_until(erin, lambda e: e.message == "dave from the browser")
        assert event.sender.startswith(f"{dave}@localhost/")
    finally:
        await carol.client.aclose()
        await erin.client.aclose()
