"""Implementations of ``roost serve``, ``roost db upgrade`` and ``roost registration-token``.

The CLI module parses arguments and calls these; each returns a process exit code and prints
operator-facing messages (never secrets other than a freshly created registration token).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from pathlib import Path

from .config import Config, ConfigError, _redact, load_config
from .seal_key import SealKeyFile
from .store import Database
from .store.migrate import MigrationError, check_schema, schema_status, upgrade
from .store.settings import HomeDomainMismatch, check_home_domain, recorded_home_domain

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_SCHEMA = 3


def load(config_path: str | Path | None = None) -> Config:
    """Load and validate the configuration (raises ConfigError with every problem listed)."""
    return load_config(config_path)


def _err(message: str) -> None:
    print(f"roost: {message}", file=sys.stderr)


def _prepare_data_dir(config: Config) -> None:
    if config.is_default_sqlite:
        config.data_dir.mkdir(parents=True, exist_ok=True)


def describe_database(config: Config) -> str:
    if config.is_default_sqlite:
        return f"SQLite at {(config.data_dir / 'roost.db').resolve()}"
    return _redact(config.database_url)


async def _upgrade(config: Config) -> tuple[tuple[str, ...], str]:
    db = Database(config.sqlalchemy_url)
    database = describe_database(config)
    try:
        # Refuse before touching the schema of data made for another domain.
        recorded = await recorded_home_domain(db)
        if recorded is not None and recorded != config.home_domain:
            await check_home_domain(db, config.home_domain, database)  # raises the mismatch
        result = await upgrade(db, SealKeyFile(config.queue_seal_key_path))
        await check_home_domain(db, config.home_domain, database)  # records it if new
        return result
    finally:
        await db.dispose()


ConfigLike = Config | str | Path | None


def _config(config: ConfigLike) -> Config | None:
    """Accept a loaded Config or a config path (None: $ROOST_CONFIG / ./roost.toml / defaults)."""
    if isinstance(config, Config):
        return config
    try:
        return load(config)
    except ConfigError as e:
        _err(str(e))
        return None


def db_upgrade(config: ConfigLike = None) -> int:
    """Apply pending migrations (forward-only)."""
    config = _config(config)
    if config is None:
        return EXIT_CONFIG
    _prepare_data_dir(config)
    try:
        before, head = asyncio.run(_upgrade(config))
    except HomeDomainMismatch as e:
        _err(str(e))
        return EXIT_CONFIG
    except Exception as e:  # report, do not dump a traceback at the operator
        _err(f"database upgrade failed ({describe_database(config)}): {type(e).__name__}: {e}")
        return EXIT_SCHEMA
    if before == (head,):
        print(f"database {describe_database(config)} is already at revision {head}")
    else:
        start = before[0] if before else "empty"
        print(f"database {describe_database(config)} upgraded from {start} to {head}")
    return EXIT_OK


def _start_first_migration(config: Config) -> int | None:
    """On a fresh data directory (no SQLite file yet), migrate it in a forked child process.

    The child migrates while this process goes on loading the app, and Alembic's memory (about
    10 MiB, which a process keeps once it has imported it) leaves with the child. Returns the
    child's pid, or None where this does not apply; ``_check_or_auto_upgrade`` then upgrades in
    this process as before (a file that exists with no table yet; no ``fork`` here; threads
    already running, which a fork would not carry over safely).
    """
    if not config.is_default_sqlite or (config.data_dir / "roost.db").exists():
        return None
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return None
    sys.stdout.flush()  # or the child would print this process's buffered output again
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = EXIT_SCHEMA
    try:
        asyncio.run(_upgrade(config))
        code = EXIT_OK
    except HomeDomainMismatch as e:
        _err(str(e))
    except BaseException as e:  # the child must end here, whatever happened
        _err(f"database upgrade failed ({describe_database(config)}): {type(e).__name__}: {e}")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # not SystemExit: nothing of the parent's may run in the child


def _first_migration_succeeded(pid: int) -> bool:
    """Wait for the child's upgrade (on failure it has printed why)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == EXIT_OK


async def _check_or_auto_upgrade(config: Config, migration: int | None = None) -> str | None:
    """None if the schema is current; an error message otherwise.

    The embedded SQLite default is upgraded automatically while it is still empty (a fresh data
    directory), so the quick start is one command; anything else needs ``roost db upgrade``.
    ``migration``: the pid of a child process doing that upgrade (``serve``).
    """
    if migration is not None:
        if not _first_migration_succeeded(migration):
            return f"could not initialise a new database: {describe_database(config)}"
        print(f"initialised a new database: {describe_database(config)}")
    db = Database(config.sqlalchemy_url)
    try:
        if config.is_default_sqlite:
            status = await schema_status(db)
            if status.empty and not status.current and not status.partial:
                await upgrade(db, SealKeyFile(config.queue_seal_key_path))
                print(f"initialised a new database: {describe_database(config)}")
        await check_schema(db)
        await check_home_domain(db, config.home_domain, describe_database(config))
    except (MigrationError, HomeDomainMismatch) as e:
        return str(e)
    except Exception as e:
        return f"cannot open the database {describe_database(config)}: {type(e).__name__}: {e}"
    finally:
        await db.dispose()
    return None


def serve(config: ConfigLike = None) -> int:
    """Check (or initialise) the schema, then run the ASGI app with uvicorn until stopped."""
    # Start-up builds ~150k objects that live as long as the process (modules, tables, routes):
    # the cyclic collector would walk them again and again while they pile up (~0.1 s). It
    # runs once instead, when the app has started, before gc.freeze() (create_app, freeze_gc).
    gc.disable()
    try:
        return _serve(config)
    finally:
        gc.enable()


def _serve(config_arg: ConfigLike) -> int:
    config = _config(config_arg)
    if config is None:
        return EXIT_CONFIG
    _prepare_data_dir(config)
    migration = _start_first_migration(config)  # before the app's imports, which it overlaps

    import uvicorn

    from .app import create_app
    from .connection_limits import limited_http_protocol

    problem = asyncio.run(_check_or_auto_upgrade(config, migration))
    if problem is not None:
        _err(problem)
        return EXIT_SCHEMA
    print(
        f"Roost homeserver for {config.home_domain} on http://{config.listen} "
        f"(database: {describe_database(config)}, registration: {config.registration_policy})",
        flush=True,
    )
    limits = config.limits
    uvicorn.run(
        create_app(config, freeze_gc=True),
        host=config.listen_host,
        port=config.listen_port,
        log_level=config.log_level.lower(),
        server_header=False,
        # Slow or idle clients are cut off and connections capped (connection_limits.py).
        http=limited_http_protocol(limits),
        timeout_keep_alive=limits.keepalive_timeout_seconds,
        # X-Forwarded-For is believed from the configured proxies only; uvicorn's own default
        # (believe 127.0.0.1) let any local process pick the address rate limits key on.
        proxy_headers=bool(config.trusted_proxies),
        forwarded_allow_ips=list(config.trusted_proxies),
        # Clients send only small JSON control frames on the realtime socket (notify/): refuse
        # big frames in uvicorn (close 1009) instead of buffering up to its 16 MiB default.
        ws_max_size=64 * 1024,
    )
    return EXIT_OK


async def _create_token(config: Config, uses: int | None, ttl: int | None) -> str:
    from .app import build_services

    db = Database(config.sqlalchemy_url)
    try:
        await check_schema(db)
        return await build_services(db, config).auth.create_registration_token(uses, ttl)
    finally:
        await db.dispose()


def registration_token_create(
    config: ConfigLike = None, uses: int | None = 1, ttl_seconds: int | None = None
) -> int:
    """Create an operator-issued registration token and print it (once) to stdout."""
    config = _config(config)
    if config is None:
        return EXIT_CONFIG
    try:
        token = asyncio.run(_create_token(config, uses, ttl_seconds))
    except MigrationError as e:
        _err(str(e))
        return EXIT_SCHEMA
    print(token)
    return EXIT_OK
