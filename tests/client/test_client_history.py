"""Local message history: append, read back in order, 0600 files, torn lines, memory mode."""

from __future__ import annotations

import stat

import pytest

from roost.client.history import History, HistoryEntry

GID = b"\x01\x02"


def test_append_and_read_back_in_order(tmp_path):
    h = History.in_home(tmp_path)
    h.append(GID, HistoryEntry("message", "a@x/1", "hi", epoch=1, seq=3))
    h.append(GID, HistoryEntry("commit", "b@x/2", "added c@x", epoch=2, seq=4))
    h.append(b"\x09", HistoryEntry("message", "a@x/1", "other group"))
    got = History.in_home(tmp_path).entries(GID)
    assert [(e.kind, e.text, e.seq) for e in got] == [
        ("message", "hi", 3),
        ("commit", "added c@x", 4),
    ]
    assert all(e.at > 0 for e in got)
    assert [e.text for e in h.messages(GID)] == ["hi"]
    assert [e.text for e in h.entries(GID, last=1)] == ["added c@x"]
    f = tmp_path / "history" / f"{GID.hex()}.jsonl"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_torn_last_line_is_skipped(tmp_path):
    h = History.in_home(tmp_path)
    h.append(GID, HistoryEntry("message", "a", "ok"))
    f = tmp_path / "history" / f"{GID.hex()}.jsonl"
    with open(f, "ab") as fh:
        fh.write(b'{"kind": "mess')
    assert [e.text for e in h.entries(GID)] == ["ok"]


def test_memory_mode_and_forget(tmp_path):
    h = History.in_home(None)
    h.append(GID, HistoryEntry("notice", "", "group deleted"))
    assert [e.kind for e in h.entries(GID)] == ["notice"]
    h.forget(GID)
    assert h.entries(GID) == []
    d = History.in_home(tmp_path)
    d.append(GID, HistoryEntry("message", "a", "x"))
    d.forget(GID)
    assert d.entries(GID) == []


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        History().append(GID, HistoryEntry("bogus", "", ""))


def test_home_delete_removes_history_and_group_cursors(tmp_path):
    from roost.client import ClientState, Home

    home = Home(tmp_path / "h")
    home.save(ClientState(server="http://x", signature_private=b"k"))
    History.in_home(home.path).append(GID, HistoryEntry("message", "a", "secret"))
    (home.path / "group_client.json").write_text("{}")
    home.delete()
    assert not (home.path / "history").exists()
    assert not (home.path / "group_client.json").exists()
