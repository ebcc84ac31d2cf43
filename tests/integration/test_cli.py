"""The ``roost`` command drives a real server end to end, keeping state under ``--home``."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from roost.cli.main import main
from roost.client import key_fingerprint
from roost.protocol.base64url import unb64u

from .conftest import PASSWORD, unique_name


class Cli:
    """Runs ``roost`` with ``--json``: in this process (fast) or as a real subprocess."""

    def __init__(self, url: str, home) -> None:
        self.url = url
        self.home = home

    def run(
        self, *args: str, ok: bool = True, stdin: str | None = None, subprocess_: bool = False
    ) -> dict | list:
        argv = [*args, "--home", str(self.home), "--server", self.url, "--json"]
        if subprocess_:
            env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
            env["ROOST_PASSWORD"] = PASSWORD
            proc = subprocess.run(
                [sys.executable, "-m", "roost.cli.main", *argv],
                env=env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=60,
            )
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            out_buf, err_buf = io.StringIO(), io.StringIO()
            old_stdin = sys.stdin
            sys.stdin = io.StringIO(stdin or "")
            sys.stdin.buffer = io.BytesIO((stdin or "").encode())  # type: ignore[misc]
            try:
                with redirect_stdout(out_buf), redirect_stderr(err_buf):
                    code = main(argv)
            finally:
                sys.stdin = old_stdin
            out, err = out_buf.getvalue(), err_buf.getvalue()
        assert code == (0 if ok else 1), (args, out, err)
        return json.loads(out) if out.strip() else {}


@pytest.fixture(autouse=True)
def _password_env(monkeypatch):
    for k in [k for k in os.environ if k.startswith("ROOST_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("ROOST_PASSWORD", PASSWORD)


def test_cli_end_to_end(server, tmp_path):
    alice = Cli(server.url, tmp_path / "alice")
    bob = Cli(server.url, tmp_path / "bob")
    a_name, b_name = unique_name("ca"), unique_name("cb")
    reg = alice.run(
        "register", a_name, "--display-name", "Alice", "--keypackages", "3", subprocess_=True
    )
    assert reg["user_id"] == f"{a_name}@localhost"
    bob.run("register", b_name, "--discoverable", "--keypackages", "2")
    # Keys and state are private to the user running the client.
    for f in (tmp_path / "alice").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((tmp_path / "alice").stat().st_mode) == 0o700

    me = alice.run("whoami", subprocess_=True)
    assert me["user_id"] == reg["user_id"] and me["display_name"] == "Alice"
    assert alice.run("login")["client_id"] == reg["client_id"]
    assert alice.run("keypackages", "count")["count"] == 3
    assert alice.run("set-name", "Alice L.")["display_name"] == "Alice L."
    assert alice.run("lookup", f"{b_name}@localhost")["user_id"] == f"{b_name}@localhost"
    found = alice.run("search", b_name)
    assert [u["user_id"] for u in found["users"]] == [f"{b_name}@localhost"]
    verified = alice.run("verify", bob.run("whoami")["client_id"])
    assert verified["client_id"].startswith(f"{b_name}@localhost/")

    # Claims need a connection; the request carries one of Bob's KeyPackages.
    err = bob.run("keypackages", "claim", reg["user_id"], ok=False)
    assert err["error"] == "no_connection"
    # The request carries the Welcome to a new two-user MLS group; accepting joins it.
    conn = bob.run("connections", "request", reg["user_id"])
    assert conn["state"] == "pending" and conn["group_id"]
    fetched = alice.run("queue", "fetch")
    [event] = fetched["events"]
    assert (event["type"], event["connection_id"]) == ("connection_request", conn["connection_id"])
    accepted = alice.run("connections", "accept", conn["connection_id"])
    assert (accepted["state"], accepted["group_id"]) == ("accepted", conn["group_id"])
    assert [g["group_id"] for g in alice.run("group", "list")] == [conn["group_id"]]
    assert [g["group_id"] for g in bob.run("group", "list")] == [conn["group_id"]]
    alice.run("queue", "ack", "--up-to", str(fetched["last_seq"]))
    # Alice's own answer follows in her queue (for her other clients).
    answered = alice.run("queue", "fetch", "--after", str(fetched["last_seq"]))["events"]
    assert [(e["type"], e["connection_id"]) for e in answered] == [
        ("connection_accepted", conn["connection_id"])
    ]
    claimed = bob.run("keypackages", "claim", reg["user_id"])
    assert len(claimed["key_package_refs"]) == 1
    told = bob.run("queue", "fetch")["events"]
    assert [e["type"] for e in told] == ["connection_accepted"]

    # Group-message queue round trip.
    qid = alice.run("queue", "create")["queue_id"]
    # --queue=<id>: a base64url id may start with "-", which argparse would read as an option
    assert alice.run("queue", "send", f"--queue={qid}", stdin="hello")["seq"] == 1
    msgs = alice.run("queue", "fetch", f"--queue={qid}")
    assert [m["seq"] for m in msgs["messages"]] == [1]

    # A second client by password, then removed again.
    phone = Cli(server.url, tmp_path / "phone")
    added = phone.run("add-client", "--user", reg["user_id"])
    assert added["client_id"].startswith(reg["user_id"] + "/")
    assert len(alice.run("whoami")["clients"]) == 2
    alice.run("remove-client", added["client_id"].rsplit("/", 1)[1])
    assert len(alice.run("whoami")["clients"]) == 1

    assert alice.run("delete-account", ok=False)["error"] == "confirmation_required"
    alice.run("delete-account", "--yes")
    assert not (tmp_path / "alice" / "signature.key").exists()
    assert bob.run("lookup", reg["user_id"], ok=False)["error"] == "user_not_found"


def test_cli_add_client_by_approval(server, tmp_path):
    alice = Cli(server.url, tmp_path / "alice")
    laptop = Cli(server.url, tmp_path / "laptop")
    reg = alice.run("register", unique_name("cc"), "--no-password")
    asked = laptop.run(
        "add-client", "--user", reg["user_id"], "--approval", "--device-name", "laptop"
    )
    assert laptop.run("add-client", "--complete")["state"] == "pending"
    [req] = alice.run("client-requests", "list")
    assert req["device_name"] == "laptop"
    # The approver compares the fingerprint the new device showed.
    assert key_fingerprint(unb64u(req["signature_key"])) == asked["fingerprint"]
    approved = alice.run("client-requests", "approve", req["request_id"])
    done = laptop.run("add-client", "--complete")
    assert done["client_id"] == approved["client_id"]
    assert laptop.run("whoami")["client_id"] == approved["client_id"]
