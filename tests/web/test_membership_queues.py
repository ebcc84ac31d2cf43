"""One group-message queue per conversation: a page in two conversations registered a
different queue for each (the server's member rows tie each queue to one group only), both
deliver in real time, conversations started while the page is open included (their queues are
added to the open socket), and leaving a conversation deletes its queue."""

from __future__ import annotations

import base64
import sqlite3
import time

from .conftest import signed_in_pair


def b64u_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def groups_of_queue(db_path, queue_id: str, group_keys: list[bytes]) -> set[bytes]:
    """The groups whose member rows name the queue, of those under ``group_keys``. The rows are
    sealed at rest: opened with the server's seal key file and the group keys the pages hold,
    as the DS does while it serves them."""
    from roost.server.delivery.at_rest import SealBroken
    from tests.server.sealed_members import member_ids

    wanted = b64u_bytes(queue_id)
    with sqlite3.connect(db_path, timeout=30) as db:
        rows = db.execute("SELECT group_id, leaf_index, sealed FROM ds_members").fetchall()
    found = set()
    for gid, leaf, sealed in rows:
        try:
            ids = member_ids(db_path.parent / "queue-seal.key", gid, leaf, sealed, group_keys)
        except SealBroken:  # another test's group, under a key these pages do not hold
            continue
        if ids.queue_id == wanted:
            found.add(gid)
    return found


def queue_exists(db_path, queue_id: str) -> bool:
    with sqlite3.connect(db_path, timeout=30) as db:
        row = db.execute("SELECT 1 FROM queues WHERE id = ?", (b64u_bytes(queue_id),)).fetchone()
    return row is not None


def own_queues(browser, name: str) -> dict[str, str | None]:
    """Conversation title -> the queue id page ``name`` keeps for it (None: none)."""
    saved = browser.call("conversation_queues", name=name)
    assert saved["shared"] == ""  # a page of today keeps no shared queue
    return {c["peer"]: c["queue"] for c in saved["conversations"]}


def test_each_conversation_has_its_own_queue_and_leaving_deletes_it(web_server, browser):
    url = web_server.url
    db_path = web_server.data_dir / "roost.db"
    alice, bob = signed_in_pair(browser, url)
    ids = {"alice": f"{alice}@localhost", "bob": f"{bob}@localhost"}
    # Both pages are open before either conversation exists: nothing is reloaded below.
    assert browser.call("queue_keys", name="alice")["hellos"] == [{}]

    assert browser.call("start", name="alice", peer=ids["bob"]) == {"error": None}
    browser.call("invitations", name="bob", wait_for=alice)
    assert browser.call("accept", name="bob", **{"from": ids["alice"]}) == {"error": None}
    group = "Two queues"
    assert browser.call("create_group", name="alice", group=group, members=ids["bob"]) == {
        "error": None
    }
    browser.call("text", name="bob", selector="#conversations", wait_for=group)

    # Messages of both conversations reach alice's open page in real time.
    browser.call("open_conversation", name="bob", peer=group)
    browser.call("send", name="bob", text="in the group")
    browser.call("messages", name="alice", wait_for="in the group")
    browser.call("open_conversation", name="bob", peer=ids["alice"])
    browser.call("send", name="bob", text="just the two of us")
    browser.call("open_conversation", name="alice", peer=ids["bob"])
    browser.call("messages", name="alice", wait_for="just the two of us")
    browser.call("send", name="alice", text="answer of two")
    browser.call("messages", name="bob", wait_for="answer of two")

    queues = {n: own_queues(browser, n) for n in ("alice", "bob")}
    keys = [
        b64u_bytes(key)
        for key in browser.call("group_keys", name="alice")["stored"].values()
        if key is not None
    ]
    assert len(keys) == 2  # both conversations have a group key
    for n, other in (("alice", ids["bob"]), ("bob", ids["alice"])):
        pair, grouped = queues[n][other], queues[n][group]
        assert pair is not None and grouped is not None and pair != grouped
        # The server ties each queue to one group; the two groups differ.
        pair_groups, group_groups = (
            groups_of_queue(db_path, pair, keys),
            groups_of_queue(db_path, grouped, keys),
        )
        assert len(pair_groups) == 1 and len(group_groups) == 1
        assert pair_groups != group_groups
        # Both queues were made while the socket was open: added by subscribe frames.
        sockets = browser.call("queue_keys", name=n)["sockets"]
        assert set(sockets[-1]) == {pair, grouped}
    assert not set(queues["alice"].values()) & set(queues["bob"].values())

    # bob leaves the group: his page deletes that queue at once (the DS sends a leaving
    # member nothing more); alice's page commits his leave and the pair goes on.
    browser.call("open_conversation", name="bob", peer=group)
    browser.call("group_action", name="bob", label="Leave group")
    browser.call("text", name="bob", selector="#conversation-status", wait_for="left")
    gone = queues["bob"][group]
    deadline = time.monotonic() + 30
    while queue_exists(db_path, gone) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not queue_exists(db_path, gone)
    assert own_queues(browser, "bob")[group] is None
    browser.call("open_conversation", name="alice", peer=group)
    browser.call("members", name="alice", wait_gone=ids["bob"])
    assert queue_exists(db_path, queues["bob"][ids["alice"]])
    browser.call("open_conversation", name="alice", peer=ids["bob"])
    browser.call("send", name="alice", text="still here after the group")
    browser.call("open_conversation", name="bob", peer=ids["alice"])
    browser.call("messages", name="bob", wait_for="still here after the group")

    # A reload presents the remaining queue only.
    assert browser.call("reload", name="bob")["error"] is None
    browser.call("text", name="bob", selector="#status", wait_for="Online")
    hello = browser.call("queue_keys", name="bob")["hellos"][-1]
    assert set(hello) == {queues["bob"][ids["alice"]]}
