"""A real ``roost serve`` on the default configuration (SQLite under its data directory) loads
only what that configuration uses: seen through Python's own import log of the server process
(``PYTHONPROFILEIMPORTTIME``), from its start until it answered ``/ready``.

What the deferred pieces do once loaded is covered by their own tests (federation/, push,
outbound policy, migrations); tests/server/test_lean_start.py checks the same in-process.
"""

from __future__ import annotations

import subprocess
import sys
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


def test_first_start_defers_the_same(tmp_path: Path) -> None:
    """On an empty data directory `roost serve` creates and migrates the database (in a forked
    child, whose own imports, Alembic's, share this log: tests/server/test_lean_start.py
    checks that the server never holds Alembic)."""
    server = ServerProcess("sqlite", tmp_path, extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    server.port = free_port()
    imported = _serve(server.spawn())  # `roost serve` alone, on an empty data directory
    assert (tmp_path / "roost.db").exists()
    assert "initialised a new database" in server.log_path.read_text()
    assert {"roost.server.app", "aiosqlite", "uvicorn"} <= imported
    alembics = {"sqlalchemy.dialects.postgresql"}  # Alembic imports every dialect's DDL
    assert sorted(imported & (set(DEFERRED) - alembics)) == []


def test_first_start_reports_a_failed_migration(tmp_path: Path) -> None:
    """The child's failure stops `roost serve` with its reason and the schema exit status."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "roost.db").symlink_to(tmp_path / "missing" / "roost.db")  # cannot be created
    server = ServerProcess("sqlite", data)
    server.port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "roost.cli.main", "serve"],
        env=server.env,
        cwd=data,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert "database upgrade failed" in done.stderr
    assert "could not initialise a new database" in done.stderr
