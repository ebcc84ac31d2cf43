"""``roost admin``: operator commands run on the host, directly against the configured database.

They need no running server (and work beside one: every change is a committed transaction the
server reads, e.g. the federation policy and suspensions). Exit codes: 0 ok, 1 refused (unknown
user, bad input), 2 configuration error, 3 schema not current (run ``roost db upgrade``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_CONFIG, EXIT_SCHEMA = 0, 1, 2, 3

Action = Callable[[Any, argparse.Namespace], Awaitable[tuple[Any, list[str]]]]


def _when(ts: int | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _age(seconds: int | None) -> str:
    return "-" if seconds is None else f"{seconds}s"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_plain(v) for v in value]
        return sorted(items) if isinstance(value, frozenset | set) else items
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---- users ---------------------------------------------------------------------------------
def _read_password(args: argparse.Namespace) -> str | None:
    if args.no_password:
        return None
    if args.password_stdin:
        pw = sys.stdin.readline().rstrip("\n")
    elif os.environ.get("ROOST_PASSWORD"):
        pw = os.environ["ROOST_PASSWORD"]
    elif sys.stdin.isatty():
        import getpass

        pw = getpass.getpass("Password for the new user: ")
    else:
        raise _Refused("give a password with --password-stdin or $ROOST_PASSWORD, or --no-password")
    if len(pw) < 8:
        raise _Refused("the password must be at least 8 characters")
    return pw


async def users_list(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    users = await admin.list_users(limit=args.limit, after=args.after)
    lines = [
        f"{u.user_id:40} clients={u.clients:<3} created={_when(u.created_at)}"
        + (f"  SUSPENDED since {_when(u.suspended_at)}" if u.suspended_at else "")
        for u in users
    ]
    if len(users) == args.limit:
        lines.append(f"(more: --after {users[-1].user_id.split('@')[0]})")
    return users, lines or ["no users"]


async def users_create(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    user = await admin.create_user(
        args.name, password=_read_password(args), display_name=args.display_name
    )
    hint = (
        "the user adds a first client with `roost add-client --user "
        f"{user.user_id}` and the password"
    )
    return user, [f"created {user.user_id}", hint]


async def users_suspend(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    user = await admin.set_suspended(args.name, True)
    return user, [f"suspended {user.user_id} (tokens revoked; sign-in and requests refused)"]


async def users_unsuspend(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    user = await admin.set_suspended(args.name, False)
    return user, [f"{user.user_id} is no longer suspended"]


async def users_delete(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    if not args.yes:
        raise _Refused(f"add --yes to delete {args.name} and all its clients and data")
    user_id = await admin.delete_user(args.name)
    return {"deleted": user_id}, [
        f"deleted {user_id} (its groups get server-issued Removes; the name is retired)"
    ]


# ---- registration tokens --------------------------------------------------------------------
async def tokens_create(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    token, token_id = await admin.create_token(
        None if args.unlimited else args.uses, args.ttl_seconds
    )
    return {"token": token, "id": token_id}, [token]  # the token alone, for scripts


async def tokens_list(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    tokens = await admin.list_tokens()
    lines = [
        f"{t.id}  uses_left={'unlimited' if t.uses_left is None else t.uses_left:<9} "
        f"expires={_when(t.expires_at)}  created={_when(t.created_at)}"
        + ("" if t.usable else "  (used up or expired)")
        for t in tokens
    ]
    return tokens, lines or ["no registration tokens"]


async def tokens_revoke(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    await admin.revoke_token(args.token_id)
    return {"revoked": args.token_id}, [f"revoked {args.token_id}"]


# ---- federation policy ----------------------------------------------------------------------
def _policy_lines(policy: Any) -> list[str]:
    if policy.mode == "allowlist":
        rule = "allowlist: only listed domains federate" + (
            " — the allowlist is EMPTY, so no domain is admitted" if not policy.allow else ""
        )
    else:
        rule = "open: every domain federates except blocked ones"
    lines = [
        f"mode      {rule}",
        f"allowlist {', '.join(sorted(policy.allow)) or '(empty)'}",
        f"blocklist {', '.join(sorted(policy.block)) or '(empty)'}  (always wins)",
    ]
    if policy.forgotten:
        lines.append(f"forgotten {', '.join(sorted(policy.forgotten))}  (blocked; unblock lifts)")
    return lines


async def federation_show(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    policy = await admin.federation.load(fresh=True)
    return policy, _policy_lines(policy)


async def federation_change(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    store = admin.federation
    op = args.fed_action
    if op == "mode":
        await store.set_mode(args.value)
        note = f"mode set to {args.value}"
    elif op in ("allow", "block"):
        added = await store.add(op, args.value)
        note = f"{args.value} {'added to' if added else 'already on'} the {op}list"
    else:  # unallow / unblock
        kind = op[2:]
        removed = await store.remove(kind, args.value)
        note = f"{args.value} {'removed from' if removed else 'was not on'} the {kind}list"
    policy = await store.load(fresh=True)
    return policy, [note, *_policy_lines(policy)]


async def federation_forget(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    done = await admin.forget_domain(args.domain)
    lines = [
        f"{done.domain} {'forgotten' if done.newly else 'was already forgotten'}: blocked, "
        f"{done.discarded} queued item(s) for it discarded",
        "running servers remove its members from this server's groups within seconds "
        "(server Remove proposals, a domain_forgotten notice to the other members)",
    ]
    return done, lines


async def federation_rotate_key(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    from roost.server.federation.identity import ServerIdentity

    identity = ServerIdentity(admin.db, admin.clock)
    old = await identity.current()
    new = await identity.rotate()
    grace_h = identity.grace_seconds // 3600
    lines = [f"signing key is now {new.key_id}"]
    if old is not None:
        lines.append(f"{old.key_id} retired; still published for {grace_h} h (in-flight requests)")
    lines.append("running servers sign with the new key within seconds (no restart)")
    return {"key_id": new.key_id, "retired": old.key_id if old else None}, lines


async def federation_ping(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    from roost.server.errors import Problem

    fed = admin.services.federation
    try:
        answer = await fed.client.json(args.domain, "GET", "/federation/v1/whoami")
    except Problem as e:
        raise _Refused(f"{e.code}: {e.detail}") from None
    finally:
        await fed.client.aclose()
    return answer, [f"{args.domain} verified this server's signature as {answer['origin']}"]


# ---- status ---------------------------------------------------------------------------------
async def queues_status(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    rows = await admin.queue_status()
    lines = [
        f"{q.kind:8} queues={q.queues:<8} depth={q.depth:<10} oldest={_age(q.oldest_age_seconds)}"
        for q in rows
    ]
    return rows, lines


def _outbox_line(o: Any) -> str:
    line = (
        f"{o.outbox + (' → ' + o.destination if o.destination else ''):30} depth={o.depth:<8} "
        f"oldest={_age(o.oldest_age_seconds)}"
    )
    if o.destination is None:
        return line
    line += f" attempts={o.attempts} next={_age(o.next_attempt_in_seconds)}"
    if o.blocked:
        line += " BLOCKED by policy (held, not sent)"
    elif o.attempts:
        line += " UNREACHABLE (held, retried)"
    if o.last_error:
        line += f" last_error={o.last_error}"
    return line


async def outbox_status(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    import roost.server.federation.outbox  # noqa: F401 - registers the federation source
    from roost.server.operator.status import federation_available

    rows = await admin.outbox_status()
    lines = [_outbox_line(o) for o in rows]
    if not federation_available():
        lines.append("federation outbox: not in this version (federation is not built yet)")
    elif not any(o.outbox == "federation" for o in rows):
        lines.append("federation outbox: nothing queued for other domains")
    return rows, lines


async def federation_retry(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    from roost.server.federation.outbox import request_retry

    n = await request_retry(admin.db, args.domain, int(admin.clock() * 1000))
    what = args.domain or "every destination with queued items"
    if args.domain and not n:
        return {"destinations": 0}, [f"nothing queued for {args.domain}"]
    return {"destinations": n}, [f"next attempt due now for {what} ({n} destination(s))"]


async def storage_stats(admin: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    stats = await admin.storage_stats()
    lines = [f"database  {stats.engine}, {_bytes(stats.database_bytes)}"]
    if stats.asset_bytes is not None:
        lines.append(f"assets    {_bytes(stats.asset_bytes)} of stored blobs")
    lines += [f"  {name:28} {count} rows" for name, count in stats.rows.items()]
    return stats, lines


# ---- plumbing -------------------------------------------------------------------------------
class _Refused(Exception):
    pass


async def _run(config: Any, action: Action, args: argparse.Namespace) -> tuple[Any, list[str]]:
    from roost.server.operator.service import AdminService
    from roost.server.store.migrate import check_schema

    admin = AdminService.open(config)
    try:
        await check_schema(admin.db)
        return await action(admin, args)
    finally:
        await admin.close()


def run_admin(args: argparse.Namespace) -> int:
    from roost.server.config import ConfigError, load_config
    from roost.server.federation.policy import PolicyError
    from roost.server.operator.service import AdminError
    from roost.server.store.migrate import MigrationError

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"roost: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        value, lines = asyncio.run(_run(config, args.admin_action, args))
    except MigrationError as e:
        print(f"roost: {e}", file=sys.stderr)
        return EXIT_SCHEMA
    except (AdminError, PolicyError, _Refused) as e:
        if args.json:
            print(json.dumps({"error": str(e)}))
        print(f"roost: {e}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(_plain(value), indent=1, default=str))
    else:
        print("\n".join(lines))
    return EXIT_OK


def add_admin_command(sub: Any) -> None:
    """Register ``roost admin …`` on the top-level sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    admin = sub.add_parser(
        "admin",
        help="operator tools on the configured database (users, tokens, federation, status)",
        description="Operator tools; run on the host with the server's configuration.",
    )
    admin.add_argument("--config", help="TOML config file (default $ROOST_CONFIG or ./roost.toml)")
    admin.add_argument("--json", action="store_true", help="print results as JSON")
    admin.set_defaults(sync_handler=run_admin)
    groups = admin.add_subparsers(dest="admin_group", required=True, metavar="area")

    def leaf(parent: Any, name: str, fn: Action, help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(admin_action=fn)
        return p

    users = groups.add_parser("users", help="list, create, suspend, unsuspend, delete users")
    u = users.add_subparsers(dest="users_action", required=True, metavar="action")
    ul = leaf(u, "list", users_list, "list users by name (paginated)")
    ul.add_argument("--limit", type=int, default=100)
    ul.add_argument("--after", help="continue after this user name")
    uc = leaf(u, "create", users_create, "create a user with a password and no client yet")
    uc.add_argument("name", help="name or name@domain")
    uc.add_argument("--display-name")
    uc.add_argument("--password-stdin", action="store_true")
    uc.add_argument("--no-password", action="store_true", help="no password (cannot sign in)")
    for name, fn, text in (
        ("suspend", users_suspend, "block sign-in and every request (revokes live tokens)"),
        ("unsuspend", users_unsuspend, "lift a suspension"),
        ("delete", users_delete, "delete the account (as the user would) and retire the name"),
    ):
        p = leaf(u, name, fn, text)
        p.add_argument("name", help="name or name@domain")
        if name == "delete":
            p.add_argument("--yes", action="store_true", help="confirm the deletion")

    tokens = groups.add_parser("tokens", help="registration tokens: create, list, revoke")
    t = tokens.add_subparsers(dest="tokens_action", required=True, metavar="action")
    tc = leaf(t, "create", tokens_create, "create a token (printed once)")
    tc.add_argument("--uses", type=int, default=1, help="registrations it allows (default 1)")
    tc.add_argument("--unlimited", action="store_true", help="no use limit")
    tc.add_argument("--ttl-seconds", type=int, help="expire after this many seconds")
    leaf(t, "list", tokens_list, "list tokens by id (the tokens themselves are not stored)")
    tr = leaf(t, "revoke", tokens_revoke, "revoke a token by its id (or a unique prefix)")
    tr.add_argument("token_id")

    fed = groups.add_parser(
        "federation", help="federation policy (mode, allowlist, blocklist) and outbound retry"
    )
    f = fed.add_subparsers(dest="fed_action", required=True, metavar="action")
    leaf(f, "show", federation_show, "show the stored policy")
    fm = leaf(f, "mode", federation_change, "allowlist (listed only) or open (all but blocked)")
    fm.add_argument("value", choices=["allowlist", "open"])
    for name, text in (
        ("allow", "add a domain to the allowlist"),
        ("unallow", "remove a domain from the allowlist"),
        ("block", "add a domain to the blocklist"),
        ("unblock", "remove a domain from the blocklist"),
    ):
        leaf(f, name, federation_change, text).add_argument("value", metavar="domain")
    leaf(
        f,
        "forget",
        federation_forget,
        "block a domain for good: discard what is queued for it; its members leave our groups",
    ).add_argument("domain")
    fr = leaf(f, "retry", federation_retry, "retry the outbound queue now (one domain or all)")
    fr.add_argument("domain", nargs="?", help="only this destination domain")
    leaf(f, "rotate-key", federation_rotate_key, "new server signing key (old one kept 1 day)")
    fp = leaf(f, "ping", federation_ping, "send a signed request to a domain (connectivity check)")
    fp.add_argument("domain")

    for name, fn, text in (
        ("queues", queues_status, "queue depth and oldest item age per queue kind"),
        ("outbox", outbox_status, "outbox depth (account events; federation per destination)"),
        ("storage", storage_stats, "rows per table, database size, asset bytes"),
    ):
        leaf(groups, name, fn, text)
