"""A client's local message history: what each group showed this client, in group order.

One append-only JSON-lines file per group under ``<home>/history/<group id hex>.jsonl``
(0600: it holds plaintext). Entries are only ever appended, so a crash loses at most the line
being written; a torn last line is skipped on read. Without a home the history lives in memory.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

_HISTORY_DIR = "history"

# Entry kinds: an application message (ours or another member's), a membership/epoch change,
# and a homeserver notice.
KINDS = ("message", "commit", "notice")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    kind: str
    sender: str  # client id of the sender ("" for the homeserver)
    text: str  # message text (UTF-8; undecodable bytes as \ufffd) or a short description
    epoch: int = 0
    seq: int = 0  # the group-wide order number given by the Delivery Service (0 if unknown)
    outgoing: bool = False
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict walks and copies each field, ~15 µs here against
        # ~0.5 µs, on every message a client sends and receives.
        return {
            "kind": self.kind,
            "sender": self.sender,
            "text": self.text,
            "epoch": self.epoch,
            "seq": self.seq,
            "outgoing": self.outgoing,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HistoryEntry:
        return cls(
            str(d["kind"]),
            str(d.get("sender", "")),
            str(d.get("text", "")),
            int(d.get("epoch", 0)),
            int(d.get("seq", 0)),
            bool(d.get("outgoing", False)),
            float(d.get("at", 0.0)),
        )


class History:
    """Per-group message history of one client (on disk under ``folder``, or in memory)."""

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[bytes, list[HistoryEntry]] = {}

    @classmethod
    def in_home(cls, home_path: str | os.PathLike[str] | None) -> History:
        return cls(Path(home_path) / _HISTORY_DIR if home_path is not None else None)

    def _path(self, group_id: bytes) -> Path:
        assert self.folder is not None
        return self.folder / f"{group_id.hex()}.jsonl"

    def append(self, group_id: bytes, entry: HistoryEntry) -> HistoryEntry:
        if entry.kind not in KINDS:
            raise ValueError(f"unknown history entry kind {entry.kind!r}")
        if not entry.at:
            entry = replace(entry, at=time.time())
        if self.folder is None:
            self._memory.setdefault(group_id, []).append(entry)
            return entry
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = json.dumps(entry.to_json(), ensure_ascii=False).encode() + b"\n"
        fd = os.open(self._path(group_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)  # one write of one line: appends never interleave
        finally:
            os.close(fd)
        return entry

    def entries(self, group_id: bytes, *, last: int | None = None) -> list[HistoryEntry]:
        if self.folder is None:
            out = list(self._memory.get(group_id, ()))
        else:
            out = []
            try:
                raw = self._path(group_id).read_bytes()
            except FileNotFoundError:
                raw = b""
            for line in raw.splitlines():
                try:
                    out.append(HistoryEntry.from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash
        return out[-last:] if last else out

    def messages(self, group_id: bytes) -> list[HistoryEntry]:
        return [e for e in self.entries(group_id) if e.kind == "message"]

    def forget(self, group_id: bytes) -> None:
        self._memory.pop(group_id, None)
        if self.folder is not None:
            self._path(group_id).unlink(missing_ok=True)
