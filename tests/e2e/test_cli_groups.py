"""``roost group …`` against a real server: create with an invite, send, sync (join + read),
history, roles, leave + commit, delete, joining an external_join group with its key — each
user's state in its own ``--home``."""

from __future__ import annotations

import json

from roost.protocol.base64url import unb64u
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


def test_group_resync_after_lost_state(server, tmp_path):
    alice, alice_id = _user(server, tmp_path, "alice")
    bob, bob_id = _user(server, tmp_path, "bob")
    _connect(alice, bob, bob_id)
    [connected] = alice.run("group", "sync")  # bob accepted: the connection's group is ready
    assert connected["kind"] == "connected"
    gid = alice.run("group", "create", bob_id)["group_id"]
    bob.run("group", "sync")
    # bob loses his group state (the queue and his membership on the DS are still there).
    [state] = (tmp_path / "bob").rglob(f"{unb64u(gid).hex()}.mls")
    state.unlink()
    err = bob.run("group", "send", gid, "lost", ok=False)
    assert err["error"] == "unknown_group"
    ev = bob.run("group", "resync", gid)
    assert ev["kind"] == "resynced" and ev["epoch"] == 2
    [commit] = alice.run("group", "sync")
    assert commit["kind"] == "commit" and "rejoined" in commit["text"]
    assert commit["sender"].startswith(bob_id + "/")
    bob.run("group", "send", gid, "back again")
    [msg] = alice.run("group", "sync")
    assert msg["kind"] == "message" and msg["sender"].startswith(bob_id + "/")
    assert alice.run("group", "info", gid)["roles"] == {alice_id: "admin"}
    # A group we are not in cannot be "resynced" into (its key is not even ours).
    carol, _ = _user(server, tmp_path, "carol")
    err = carol.run("group", "resync", gid, ok=False)
    assert err["error"] == "group_key_required"


def test_group_invite_without_the_tree_joins_also_after_the_group_moved_on(server, tmp_path):
    alice, alice_id = _user(server, tmp_path, "alice")
    bob, bob_id = _user(server, tmp_path, "bob")
    carol, carol_id = _user(server, tmp_path, "carol")
    _connect(alice, bob, bob_id)
    _connect(alice, carol, carol_id)

    gid = alice.run("group", "create", bob_id, "--no-tree")["group_id"]
    [joined] = bob.run("group", "sync")
    assert joined["kind"] == "joined"
    alice.run("group", "send", gid, "hi bob")
    [msg] = bob.run("group", "sync")
    assert msg["kind"] == "message" and msg["sender"].startswith(alice_id + "/")

    # carol's Welcome leaves the tree out and the group moves on before she syncs: she joins
    # in place of the leaf the Welcome added for her, and the group goes on with her.
    alice.run("group", "invite", gid, carol_id, "--no-tree")
    alice.run("group", "update", gid)
    [joined] = carol.run("group", "sync")
    assert joined["kind"] == "joined", joined
    assert "epoch had passed" in joined["text"] and alice_id in joined["text"]
    assert carol.run("group", "sync") == []
    alice.run("group", "sync")
    carol.run("group", "send", gid, "here")
    [msg] = [m for m in alice.run("group", "sync") if m["kind"] == "message"]
    assert msg["sender"].startswith(carol_id + "/")


def test_a_member_adds_its_new_device_with_add_devices(server, tmp_path):
    alice, alice_id = _user(server, tmp_path, "alice")
    bob, bob_id = _user(server, tmp_path, "bob")
    with_alice = _connect(alice, bob, bob_id)
    gid = alice.run("group", "create", bob_id)["group_id"]
    bob.run("group", "sync")
    # bob's new phone, approved by his first client; it publishes KeyPackages
    phone = Cli(server.url, tmp_path / "phone")
    phone.run("add-client", "--user", bob_id, "--approval")
    [req] = bob.run("client-requests", "list")
    bob.run("client-requests", "approve", req["request_id"])
    phone_id = phone.run("add-client", "--complete")["client_id"]
    phone.run("keypackages", "publish", "--count", "3")
    phone_uuid = phone_id.rsplit("/", 1)[1]
    [claimed] = bob.run("keypackages", "claim", bob_id, "--client", phone_uuid)["key_package_refs"]
    assert claimed

    # bob is no admin: add-devices (all his groups: the connection's and gid) brings the phone in
    added = bob.run("group", "add-devices")
    assert sorted(e["group_id"] for e in added) == sorted([with_alice, gid])
    assert all(e["kind"] == "commit" and e["added"] == [phone_id] for e in added)
    assert bob.run("group", "add-devices", gid) == []  # nothing left to add
    joined = phone.run("group", "sync")
    assert sorted((e["kind"], e["group_id"]) for e in joined) == sorted(
        [("joined", with_alice), ("joined", gid)]
    )
    phone.run("group", "send", gid, "hello from the phone")
    events = [e for e in alice.run("group", "sync") if e["group_id"] == gid]
    commit, msg = events
    assert commit["kind"] == "commit" and commit["added"] == [phone_id]
    assert msg["sender"] == phone_id and msg["kind"] == "message"
    # inviting another user still needs an admin
    carol, carol_id = _user(server, tmp_path, "carol")
    _connect(bob, carol, carol_id)
    assert bob.run("group", "invite", gid, carol_id, ok=False)["error"] == "role_required"


def test_an_action_shows_what_its_catch_up_read_first(server, tmp_path, capsys):
    """``roost group send`` reads the group first (to act on the current epoch): in text
    output, what that read comes before the action's own line, not only into the history."""
    from roost.cli.main import main

    alice, alice_id = _user(server, tmp_path, "alice")
    bob, bob_id = _user(server, tmp_path, "bob")
    gid = _connect(alice, bob, bob_id)  # the connection's two-user group
    alice.run("group", "sync")  # she learns that bob accepted
    bob.run("group", "send", gid, "are you there?")

    capsys.readouterr()
    argv = ["--home", str(alice.home), "--server", alice.url]
    assert main(["group", "send", gid, "yes", *argv]) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(": are you there?") and bob_id in lines[0], lines
    assert lines[1].startswith("sent #"), lines


def test_an_external_join_group_is_joined_with_the_key_create_prints(server, tmp_path):
    alice, _ = _user(server, tmp_path, "alice")
    carol, carol_id = _user(server, tmp_path, "carol")
    created = alice.run("group", "create", "--external-join")
    gid, join = created["group_id"], created["join"]
    assert join.startswith(gid + "#") and len(unb64u(join.partition("#")[2])) == 32
    saved = json.loads((tmp_path / "alice" / "group_client.json").read_text())
    assert saved["group_keys"][gid] == join.partition("#")[2]
    assert "join" not in alice.run("group", "create")  # no external joins: nothing to hand out

    err = carol.run("group", "join", gid, "--key", "short", ok=False)
    assert err["error"] == "invalid_arguments" and "group key" in err["detail"]
    joined = carol.run("group", "join", join)
    assert joined["kind"] == "joined"
    saved = json.loads((tmp_path / "carol" / "group_client.json").read_text())
    assert saved["group_keys"][gid] == join.partition("#")[2]
    carol.run("group", "send", gid, "hi from carol")
    events = alice.run("group", "sync")
    assert any(e.get("sender", "").startswith(carol_id + "/") for e in events)
