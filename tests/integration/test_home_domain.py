"""The data remembers the ``home_domain`` it was created with.

``roost serve`` and ``roost db upgrade`` refuse to run on data created for another domain
(every user would be renamed and every client would get ``auth_failed``); a database from
before the record existed adopts the configured domain on first start. Real processes on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import subprocess

import pytest
from alembic import command

from roost.server.config import build_config
from roost.server.store import Database
from roost.server.store.migrate import alembic_config

from .conftest import ENGINES
from .harness import ServerProcess, free_port

FIRST, SECOND = "first.test", "second.test"
# The last revision before the domain record existed.
BEFORE_THE_RECORD = "0008"


@pytest.fixture(params=ENGINES)
def data(request, tmp_path):
    """(engine, data directory, database URL) of fresh, empty data."""
    url = request.getfixturevalue("postgres_database")() if request.param == "postgresql" else ""
    return request.param, tmp_path / "data", url


def _server(data, domain: str) -> ServerProcess:
    engine, data_dir, url = data
    server = ServerProcess(engine, data_dir, url, {"ROOST_HOME_DOMAIN": domain})
    server.port = free_port()  # `start()` picks its own; `_run` needs one to be valid
    return server


def _run(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a ``roost`` command that is expected to exit by itself (not to keep serving)."""
    server.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(
            server._roost(*args),
            env=server.env,
            cwd=server.data_dir,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`roost {' '.join(args)}` kept running with another home_domain")


def _assert_refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    message = result.stderr
    assert FIRST in message and SECOND in message, message
    assert "docs/operations.md" in message, message


async def _upgrade_to(data, revision: str) -> None:
    engine, data_dir, url = data
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {"ROOST_DATA_DIR": str(data_dir), "ROOST_DATABASE_URL": url}
    db = Database(build_config({}, env).sqlalchemy_url)
    try:
        async with db.engine.connect() as conn:

            def run(sync_conn):  # type: ignore[no-untyped-def]
                cfg = alembic_config()
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, revision)

            await conn.run_sync(run)
            await conn.commit()
    finally:
        await db.dispose()


def test_serve_and_upgrade_refuse_another_home_domain(data):
    first = _server(data, FIRST).start()
    first.stop()

    second = _server(data, SECOND)
    _assert_refused(_run(second, "serve"))
    _assert_refused(_run(second, "db", "upgrade"))

    # Nothing was changed by the refusals: the original domain still starts.
    _server(data, FIRST).start().stop()


async def test_data_from_before_the_record_adopts_the_configured_domain(data):
    await _upgrade_to(data, BEFORE_THE_RECORD)
    first = _server(data, FIRST).start()  # `roost db upgrade`, then `roost serve`
    first.stop()
    _assert_refused(_run(_server(data, SECOND), "serve"))
