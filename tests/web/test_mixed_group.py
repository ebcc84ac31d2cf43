"""A browser user, a ``roost`` CLI user (the real command, in a subprocess) and a Python-library
user in one named group made by the page: every Roost client lists the group-name extension in
its leaves, so the page can add them, and each reads the others' messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from roost.protocol.base64url import b64u
from tests.e2e.helpers import sync_until

from .conftest import PASSWORD, python_user, signed_up, unique


def _roost_text(url: str, home: Path, *args: str) -> str:
    """``roost …`` as a user would run it; what it prints."""
    script = Path(sys.executable).with_name("roost")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "roost.cli.main"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env["ROOST_PASSWORD"] = PASSWORD
    argv = [*cmd, *args, "--home", str(home), "--server", url]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def _roost(url: str, home: Path, *args: str) -> list | dict:
    """``roost … --json``; its parsed output."""
    out = _roost_text(url, home, *args, "--json")
    return json.loads(out) if out.strip() else {}


async def test_browser_cli_and_python_users_in_one_named_group(web_server, browser, tmp_path):
    url = web_server.url
    home = tmp_path / "cli-home"
    cli_name = unique("cli")
    cli = f"{cli_name}@localhost"
    _roost(url, home, "register", cli_name, "--keypackages", "3")
    py = await python_user(url, "py")
    try:
        alice = signed_up(browser, "alice", url, "web")
        alice_id = f"{alice}@localhost"

        # The page connects with both (only connected users may be invited).
        assert browser.call("start", name="alice", peer=cli) == {"error": None}
        [pending] = [c for c in _roost(url, home, "connections", "list") if c["state"] == "pending"]
        _roost(url, home, "connections", "accept", pending["connection_id"])
        assert browser.call("start", name="alice", peer=py.user_id) == {"error": None}
        [conn] = [c for c in await py.client.connections() if c.state == "pending"]
        await py.groups.accept_connection(conn.connection_id)

        group = "Three clients"
        r = browser.call("create_group", name="alice", group=group, members=f"{cli}, {py.user_id}")
        assert r == {"error": None}
        assert browser.call("members", name="alice") == [
            f"{alice_id} (you) · admin",
            cli,
            py.user_id,
        ]

        joined = await sync_until(py, lambda e: e.kind == "joined")
        gid = joined.group_id
        assert py.groups.group_name(gid) == group
        _roost(url, home, "group", "sync")  # the CLI joins from the Welcome
        listed = _roost_text(url, home, "group", "list")
        assert f"{b64u(gid)}  epoch 1" in listed and f"name '{group}'" in listed

        browser.call("send", name="alice", text="hello from the browser")
        _roost(url, home, "group", "send", b64u(gid), "hello from the cli")
        await py.groups.send(gid, "hello from python")

        got = browser.call("messages", name="alice", wait_for="hello from python")
        assert [(m["from"], m["text"]) for m in got] == [
            ("You", "hello from the browser"),
            (cli, "hello from the cli"),
            (py.user_id, "hello from python"),
        ]
        seen = await sync_until(py, lambda e: e.message == "hello from the cli")
        assert seen.sender.startswith(f"{cli}/")
        assert "hello from the browser" in [e.message for e in py.seen if e.kind == "message"]
        _roost(url, home, "group", "sync")
        history = _roost(url, home, "group", "history", b64u(gid))
        assert [
            (e["sender"].split("/")[0], e["text"], e["outgoing"])
            for e in history
            if e["kind"] == "message"
        ] == [
            (alice_id, "hello from the browser", False),
            (cli, "hello from the cli", True),
            (py.user_id, "hello from python", False),
        ]
    finally:
        await py.client.aclose()
