"""The client's local state directory: round trip, 0600/0700 permissions, clear errors."""

from __future__ import annotations

import stat

import pytest

from roost.client import ClientState, Home, KeyPackageSecrets, StateError


def _mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_round_trip_and_permissions(tmp_path):
    home = Home(tmp_path / "h")
    state = ClientState(
        server="http://127.0.0.1:1",
        signature_private=b"\x01" * 32,
        home_domain="localhost",
        user_id="alice@localhost",
        client_id="alice@localhost/abc",
        credential_chain=[b"leaf", b"as"],
        as_certificate=b"as",
        token="t",
        token_expires_at=12.5,
        keypackages={"00ff": KeyPackageSecrets(b"i", b"e", True, 99)},
    )
    home.save(state)
    assert home.load() == state
    assert _mode(home.path) == 0o700
    files = list(home.path.iterdir())
    assert {f.name for f in files} == {"client.json", "signature.key", "keypackages.json"}
    assert all(_mode(f) == 0o600 for f in files)
    assert (home.path / "signature.key").read_bytes() == b"\x01" * 32


def test_missing_and_corrupt_state(tmp_path):
    home = Home(tmp_path)
    with pytest.raises(StateError, match="no client state"):
        home.load()
    home.save(ClientState(server="s", signature_private=b"k"))
    (home.path / "client.json").write_text("{not json")
    with pytest.raises(StateError, match="unreadable"):
        home.load()


def test_delete_forgets_keys(tmp_path):
    home = Home(tmp_path)
    home.save(ClientState(server="s", signature_private=b"k"))
    home.delete()
    assert not home.exists()
    assert not (tmp_path / "signature.key").exists()
