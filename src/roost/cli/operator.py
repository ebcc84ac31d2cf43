"""The operator commands of ``roost`` (``serve``, ``db upgrade``, ``registration-token create``).

They call into ``roost.server.commands`` and need nothing of the client library, so the entry
point (``main.py``) can parse them with this module alone.
"""

from __future__ import annotations

import argparse
import gc
from types import ModuleType
from typing import Any

OPERATOR_COMMANDS = frozenset({"serve", "db", "registration-token"})


def _server_commands() -> ModuleType:
    try:
        from roost.server import commands
    except ImportError as e:  # the server extra is part of the package; this is a broken install
        raise SystemExit(f"roost: the homeserver is not available: {e}") from None
    return commands


def run_serve(args: argparse.Namespace) -> int:
    gc.disable()  # from the first server import on; serve() says why and turns it back on
    return int(_server_commands().serve(args.config) or 0)


def run_db(args: argparse.Namespace) -> int:
    return int(_server_commands().db_upgrade(args.config) or 0)


def run_registration_token(args: argparse.Namespace) -> int:
    uses = None if args.unlimited else args.uses
    return int(
        _server_commands().registration_token_create(args.config, uses, args.ttl_seconds) or 0
    )


def add_operator_commands(sub: Any) -> None:
    """Register the operator commands on the top-level sub-parsers."""
    s = sub.add_parser("serve", help="start the homeserver")
    s.add_argument("--config", help="TOML config file (default $ROOST_CONFIG or ./roost.toml)")
    s.set_defaults(sync_handler=run_serve)
    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="apply pending migrations")
    db.add_argument("--config", help="TOML config file")
    db.set_defaults(sync_handler=run_db)
    rt = sub.add_parser("registration-token", help="create an operator-issued registration token")
    rt.add_argument("action", choices=["create"])
    rt.add_argument("--config", help="TOML config file")
    rt.add_argument("--uses", type=int, default=1, help="how many registrations it allows")
    rt.add_argument("--unlimited", action="store_true", help="no use limit")
    rt.add_argument("--ttl-seconds", type=int, help="expire after this many seconds")
    rt.set_defaults(sync_handler=run_registration_token)


def operator_parser() -> argparse.ArgumentParser:
    """A parser of the operator commands alone (the same sub-commands as the full parser)."""
    p = argparse.ArgumentParser(prog="roost", description="Roost homeserver and client.")
    add_operator_commands(p.add_subparsers(dest="command", required=True, metavar="command"))
    return p
