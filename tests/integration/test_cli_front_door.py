"""Front-door papercuts of the ``roost`` command, tried as a new user would.

No silent password-less account without a terminal; ``verify`` takes the short client id that
``whoami`` prints; ``keypackages claim`` prints the same id encoding with and without ``--json``;
``keypackages publish`` refuses a stray argument instead of ignoring it.
"""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from roost.cli.main import main

from .conftest import PASSWORD, unique_name


class Terminal:
    """Runs ``roost`` in this process with stdin not a terminal; text output unless --json."""

    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.home = home

    def run(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        argv = [*args, "--home", str(self.home), "--server", self.url]
        out, err = io.StringIO(), io.StringIO()
        old_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                code = main(argv)
        finally:
            sys.stdin = old_stdin
        return code, out.getvalue(), err.getvalue()

    def ok(self, *args: str, stdin: str = "") -> str:
        code, out, err = self.run(*args, stdin=stdin)
        assert code == 0, (args, out, err)
        return out

    def json(self, *args: str, stdin: str = "") -> dict:
        return json.loads(self.ok(*args, "--json", stdin=stdin))


@pytest.fixture(autouse=True)
def _no_password_env(monkeypatch):
    for k in [k for k in os.environ if k.startswith("ROOST_")]:
        monkeypatch.delenv(k)


def test_register_without_a_terminal_asks_for_a_password_choice(server, tmp_path):
    cli = Terminal(server.url, tmp_path / "alice")
    name = unique_name("np")
    code, out, err = cli.run("register", name)
    assert code != 0
    assert "--password-stdin" in err and "--no-password" in err, err
    assert not (tmp_path / "alice").exists() or not any((tmp_path / "alice").iterdir())
    # No account was made: the name is still free.
    assert cli.json("register", name, "--password-stdin", stdin=PASSWORD + "\n")["user_id"]
    other = Terminal(server.url, tmp_path / "bob")
    assert other.json("register", unique_name("np"), "--no-password")["user_id"]


def test_verify_takes_the_short_id_whoami_prints(server, tmp_path):
    cli = Terminal(server.url, tmp_path / "alice")
    cli.ok("register", unique_name("vw"), "--no-password")
    listed = [ln.split()[1] for ln in cli.ok("whoami").splitlines() if ln.startswith("  - ")]
    [short] = listed
    verified = cli.json("verify", short)
    assert verified["client_id"].endswith("/" + short)
    assert cli.ok("verify", short).startswith("verified ")


def test_claim_prints_one_id_encoding_with_and_without_json(server, tmp_path):
    alice = Terminal(server.url, tmp_path / "alice")
    bob = Terminal(server.url, tmp_path / "bob")
    a = alice.json("register", unique_name("ea"), "--no-password")
    bob.json("register", unique_name("eb"), "--no-password")
    published = alice.json("keypackages", "publish", "--count", "5")
    conn = bob.json("connections", "request", a["user_id"])
    alice.json("connections", "accept", conn["connection_id"])
    as_json = bob.json("keypackages", "claim", a["user_id"])["key_package_refs"]
    text = bob.ok("keypackages", "claim", a["user_id"]).splitlines()
    assert text[0] == "claimed 1 KeyPackages"
    as_text = [ln.strip() for ln in text[1:]]
    # Both are base64url, the API's encoding, and name KeyPackages Alice published.
    assert set(as_json) | set(as_text) <= set(published["refs"])
    assert as_json != as_text


def test_keypackages_publish_refuses_a_stray_argument(server, tmp_path):
    """``publish 5`` reads like "publish five": it is refused, not taken as 10 published."""
    cli = Terminal(server.url, tmp_path / "alice")
    cli.json("register", unique_name("kp"), "--no-password")
    code, out, err = cli.run("keypackages", "publish", "5")
    assert code != 0 and out == ""
    assert "invalid_arguments: publish takes no user id (--count N publishes N)" in err
    assert cli.json("keypackages", "count")["count"] == 0
    assert cli.json("keypackages", "publish", "--count", "5")["published"] == 5
