"""SQLite is single-process for realtime: warn when a second ``roost serve`` shares the file.

Several processes on one SQLite file stay correct (writes are serialised by ``BEGIN
IMMEDIATE``), but wake-ups are in-process only there: a socket on one process would hear of
items sent through another only on reconnect. So the first process holds an advisory lock on
``<database>.serve.lock`` for its lifetime, and a later one logs a warning (not a refusal:
nothing is lost, only realtime latency suffers).
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger("roost.server.notify")


class SqliteServeLock:
    def __init__(self, database_path: Path) -> None:
        self.path = database_path.with_name(database_path.name + ".serve.lock")
        self._fd: int | None = None
        self.shared = False  # another process serves the same file

    def acquire(self) -> SqliteServeLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return self  # read-only directory or similar: nothing to check with
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.shared = True
            log.warning(
                "another roost serve process uses this SQLite database; realtime wake-ups do "
                "not cross processes on SQLite (use PostgreSQL to run several processes)"
            )
            return self
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def sqlite_path(sqlalchemy_url: str) -> Path | None:
    """The file of a ``sqlite+aiosqlite:///path`` URL (None for in-memory databases)."""
    _, _, rest = sqlalchemy_url.partition(":///")
    if not rest or rest.startswith(":memory:"):
        return None
    return Path(rest.split("?", 1)[0])
