"""``roost group …`` against a real server: create with an invite, send, sync (join + read),
history, roles, leave + commit, delete — each user's state in its own ``--home``."""

from __future__ import annotations

from tests.integration.conftest import unique_name
from tests.integration.test_cli import Cli


def _user(server, tmp_path, label: str) -> tuple[Cli, str]:
    cli = Cli(server.url, tmp_path / label)
    name = unique_name(label)
    out = cli.run("register", name, "--no-password", "--keypackages", "3")
    return cli, out["user_id"]


def _connect(a: Cli, b: Cli, b_user: str) -> str:
    """Connect; both then hold the connection's two-user group (its id is returned)."""
    conn = a.run("connections", "request", b_user)
    accepted = b.run("connections", "accept", conn["connection_id"])
    assert accepted["group_id"] == conn["group_id"]
    return str(conn["group_id"])


def test_group_commands_end_to_end(server, tmp_path):
    alice, alice_id = _user(server, tmp_path, "alice")
    bob, bob_id = _user(server, tmp_path, "bob")
    carol, carol_id = _user(server, tmp_path, "carol")
    with_bob = _connect(alice, bob, bob_id)
    with_carol = _connect(alice, carol, carol_id)
    assert [g["group_id"] for g in bob.run("group", "list")] == [with_bob]

    gid = alice.run("group", "create", bob_id, carol_id)["group_id"]
    [listed] = [g for g in alice.run("group", "list") if g["group_id"] == gid]
    assert {g["group_id"] for g in alice.run("group", "list")} == {gid, with_bob, with_carol}
    assert listed["group_id"] == gid and listed["roles"] == {alice_id: "admin"}
    sent = alice.run("group", "send", gid, "hello", "group")
    assert sent["group_seq"] >= 1
    events = bob.run("group", "sync")
    assert [e["kind"] for e in events] == ["joined", "message"]
    assert events[1]["data"] and events[1]["sender"].startswith(alice_id + "/")
    carol.run("group", "sync")
    bob.run("group", "send", gid, "hi alice")
    [msg] = alice.run("group", "sync")
    assert msg["kind"] == "message" and msg["sender"].startswith(bob_id + "/")

    history = bob.run("group", "history", gid)
    assert [(h["kind"], h["text"], h["outgoing"]) for h in history][-2:] == [
        ("message", "hello group", False),
        ("message", "hi alice", True),
    ]

    # Roles: bob cannot remove carol until promoted.
    err = bob.run("group", "remove", gid, carol_id, ok=False)
    assert err["error"] == "role_required"
    alice.run("group", "promote", gid, bob_id)
    # carol leaves; bob (now admin) commits it; she is gone for alice too.
    carol.run("group", "leave", gid)
    bob.run("group", "commit", gid)
    alice.run("group", "sync")
    assert alice.run("group", "info", gid)["epoch"] == 2  # invite, then the leave
    alice.run("group", "policy", gid, "mentions")

    alice.run("group", "delete", gid)
    [notice] = bob.run("group", "sync")
    assert notice["kind"] == "notice" and notice["notice"]["type"] == "group_deleted"
    assert [g["group_id"] for g in bob.run("group", "list")] == [with_bob]
