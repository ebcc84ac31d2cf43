"""A real ``roost serve`` on the default configuration (SQLite under its data directory) loads
only what that configuration uses: seen through Python's own import log of the server process
(``PYTHONPROFILEIMPORTTIME``), from its start until it answered ``/ready``.

What the deferred pieces do once loaded is covered by their own tests (federation/, push,
outbound policy, migrations); tests/server/test_lean_start.py checks the same in-process.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from .harness import ServerProcess, free_port

# Never needed to serve on SQLite until something calls out or migrates.
DEFERRED = (
    "roost.client",  # the client library: the `roost` command's other commands
    "roost.cli.commands",
    "httpx",  # outbound HTTP: the first federation request or push
    "httpcore",
    "h2",
    "roost.server.outbound_http",
    "asyncpg",  # PostgreSQL
    "sqlalchemy.dialects.postgresql",
    "boto3",  # the S3 asset store
    "botocore",
)


def _imported(log: Path) -> set[str]:
    lines = log.read_text(errors="replace").splitlines()
    return {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}


def _serve(server: ServerProcess) -> set[str]:
    try:
        ready = httpx.get(f"{server.url}/ready")
        assert ready.status_code == 200 and ready.json()["schema"] == "current"
    finally:
        server.stop()
    return _imported(server.log_path)


def test_restart_loads_neither_client_nor_outbound_nor_other_engines(tmp_path: Path) -> None:
    server = ServerProcess("sqlite", tmp_path, extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = _serve(server.start())  # `roost db upgrade`, then `roost serve` on that schema
    assert {"roost.server.app", "aiosqlite", "uvicorn"} <= imported  # the log is complete
    assert sorted(imported & {*DEFERRED, "alembic", "mako"}) == []


def test_first_start_migrates_in_a_child_and_never_loads_alembic(tmp_path: Path) -> None:
    """On an empty data directory `roost serve` creates and migrates the database, the
    migration running in a child process: the server itself never holds Alembic."""
    server = ServerProcess("sqlite", tmp_path, extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    server.port = free_port()
    imported = _serve(server.spawn())  # `roost serve` alone, on an empty data directory
    assert (tmp_path / "roost.db").exists()
    assert "initialised a new database" in server.log_path.read_text()
    assert {"roost.server.app", "aiosqlite", "uvicorn"} <= imported
    assert sorted(imported & {*DEFERRED, "alembic", "mako"}) == []
