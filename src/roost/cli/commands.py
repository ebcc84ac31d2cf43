"""Every command of ``roost`` (the entry point, ``main.py``, comes here for all but the operator
commands, which it parses alone so that ``roost serve`` never loads the client library).

Operator commands (``serve``, ``db upgrade``) call into ``roost.server.commands``; every other
command drives the client library with the client's state in ``--home`` (default ``~/.roost``,
or ``$ROOST_HOME``). Results print as short text lines, or as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from roost.client import Groups, Home, PendingClient, RoostClient, RoostError, key_fingerprint
from roost.protocol.base64url import b64u

from .operator import add_operator_commands

DEFAULT_SERVER = "http://127.0.0.1:8448"

Handler = Callable[[argparse.Namespace], Awaitable[Any]]


# ---- output -------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return b64u(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _emit(args: argparse.Namespace, value: Any, text: str | list[str] | None = None) -> None:
    if args.json:
        print(json.dumps(_jsonable(value), indent=1, default=str))
    elif text is not None:
        print("\n".join(text) if isinstance(text, list) else text)


# ---- helpers ------------------------------------------------------------------------------
def _home(args: argparse.Namespace) -> Home:
    return Home(args.home or os.environ.get("ROOST_HOME") or "~/.roost")


def _server(args: argparse.Namespace) -> str:
    return args.server or os.environ.get("ROOST_SERVER") or DEFAULT_SERVER


def _password(
    args: argparse.Namespace, *, confirm: bool = False, required: bool = True
) -> str | None:
    """The password from --password-stdin, $ROOST_PASSWORD, or an interactive prompt."""
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get("ROOST_PASSWORD"):
        return os.environ["ROOST_PASSWORD"]
    if not sys.stdin.isatty():
        if required:
            raise RoostError(0, "password_required", "use --password-stdin or $ROOST_PASSWORD")
        return None
    pw = getpass.getpass("Password: ")
    if confirm and pw != getpass.getpass("Repeat password: "):
        raise RoostError(0, "password_mismatch", "the passwords differ")
    return pw or None


def _refuse_overwrite(home: Home) -> None:
    if home.exists():
        raise RoostError(
            0, "home_in_use", f"{home.path} already holds a client; choose another --home"
        )


async def _with_client(
    args: argparse.Namespace, fn: Callable[[RoostClient], Awaitable[Any]]
) -> Any:
    client = RoostClient.open(_home(args))
    try:
        return await fn(client)
    finally:
        await client.aclose()


# ---- account commands ---------------------------------------------------------------------
async def cmd_register(args: argparse.Namespace) -> None:
    home = _home(args)
    _refuse_overwrite(home)
    password = None
    if not args.no_password:
        password = _password(args, confirm=True, required=False)
        if password is None:  # no terminal to ask on (or an empty answer): never silently none
            raise RoostError(
                0,
                "password_required",
                "give a password with --password-stdin or $ROOST_PASSWORD, or register "
                "without one with --no-password (new clients then need an existing client's "
                "approval)",
            )
    client = await RoostClient.register(
        _server(args),
        args.name,
        password=password,
        display_name=args.display_name,
        registration_token=args.registration_token,
        discoverable=args.discoverable,
        cipher_suite=args.cipher_suite,
        home=home,
    )
    try:
        lines = [f"registered {client.user_id}", f"client {client.client_id}"]
        if args.keypackages:
            res = await client.publish_key_packages(args.keypackages)
            lines.append(f"published {res.published} KeyPackages")
        _emit(args, {"user_id": client.user_id, "client_id": client.client_id}, lines)
    finally:
        await client.aclose()


async def cmd_login(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        await c.authenticate()
        _emit(
            args,
            {"client_id": c.client_id, "expires_at": c.state.token_expires_at},
            f"token for {c.client_id} valid until {int(c.state.token_expires_at)}",
        )

    await _with_client(args, run)


async def cmd_whoami(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        me = await c.me()
        lines = [
            f"user    {me.user_id} ({me.user_uuid})",
            f"name    {me.display_name or '-'}",
            f"listed  {'yes' if me.discoverable else 'no'}",
            f"client  {me.client_id}",
        ]
        lines += [f"  - {ci.client_uuid}  {key_fingerprint(ci.signature_key)}" for ci in me.clients]
        _emit(args, me, lines)

    await _with_client(args, run)


async def cmd_set_name(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        me = await c.set_display_name(None if args.clear else args.display_name)
        _emit(args, me, f"display name: {me.display_name or '-'}")

    await _with_client(args, run)


async def cmd_discoverable(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        me = await c.update_me(discoverable=args.value == "on")
        _emit(args, me, f"listed in the directory: {'yes' if me.discoverable else 'no'}")

    await _with_client(args, run)


async def cmd_delete_account(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        if not args.yes:
            raise RoostError(0, "confirmation_required", f"add --yes to delete {c.user_id}")
        user = c.user_id
        await c.delete_account()
        _emit(args, {"deleted": user}, f"deleted {user}")

    await _with_client(args, run)


# ---- clients ------------------------------------------------------------------------------
async def cmd_add_client(args: argparse.Namespace) -> None:
    home = _home(args)
    if args.complete:
        pending = PendingClient.resume(home)
        try:
            client = await pending.wait(timeout=args.wait) if args.wait else await pending.poll()
        except BaseException:
            await pending.aclose()
            raise
        if client is None:
            await pending.aclose()
            _emit(args, {"state": "pending"}, "still waiting for approval")
            return
        await client.aclose()
        _emit(args, {"client_id": client.client_id}, f"approved: client {client.client_id}")
        return
    if not args.user:
        raise RoostError(0, "invalid_arguments", "--user is required")
    _refuse_overwrite(home)
    if args.approval:
        pending = await RoostClient.request_approval(
            _server(args),
            args.user,
            device_name=args.device_name,
            cipher_suite=args.cipher_suite,
            home=home,
        )
        lines = [
            f"request {pending.request_id}",
            f"key fingerprint: {pending.fingerprint}",
            "approve it from an existing client: roost client-requests approve <request>",
        ]
        _emit(args, {"request_id": pending.request_id, "fingerprint": pending.fingerprint}, lines)
        if args.wait:
            client = await pending.wait(timeout=args.wait)
            await client.aclose()
            _emit(args, {"client_id": client.client_id}, f"approved: client {client.client_id}")
        else:
            await pending.aclose()
        return
    password = _password(args)
    assert password is not None
    client = await RoostClient.add_with_password(
        _server(args), args.user, password, cipher_suite=args.cipher_suite, home=home
    )
    await client.aclose()
    _emit(args, {"client_id": client.client_id}, f"added client {client.client_id}")


async def cmd_client_requests(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        if args.action == "list":
            reqs = await c.client_requests()
            lines = [
                f"{r.request_id}  {r.device_name or '-'}  {key_fingerprint(r.signature_key)}"
                for r in reqs
            ] or ["no pending requests"]
            _emit(args, reqs, lines)
        elif args.action == "approve":
            info = await c.approve_client(args.request_id)
            _emit(args, info, f"approved: client {info.client_id}")
        else:
            await c.reject_client(args.request_id)
            _emit(args, {"rejected": args.request_id}, f"rejected {args.request_id}")

    if args.action != "list" and not args.request_id:
        raise RoostError(0, "invalid_arguments", f"{args.action} needs a request id")
    await _with_client(args, run)


async def cmd_remove_client(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        await c.remove_client(args.client_uuid)
        _emit(args, {"removed": args.client_uuid}, f"removed client {args.client_uuid}")

    await _with_client(args, run)


# ---- discovery ----------------------------------------------------------------------------
async def cmd_lookup(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        u = await c.lookup_user(args.user_id)
        _emit(args, u, f"{u.user_id}  {u.display_name or '-'}  ({u.user_uuid})")

    await _with_client(args, run)


async def cmd_search(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        page = await c.search_users(
            args.query, limit=args.limit, cursor=args.cursor, domain=args.domain
        )
        lines = [f"{u.user_id}  {u.display_name or '-'}" for u in page.users] or ["no match"]
        if page.next_cursor:
            lines.append(f"more: --cursor {page.next_cursor}")
        _emit(args, page, lines)

    await _with_client(args, run)


async def cmd_verify(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        client_id = args.client_id
        if "/" not in client_id:  # the short id `whoami` lists: a client of this user
            client_id = f"{c.user_id}/{client_id}"
        v = await c.verify_client(client_id)
        _emit(
            args,
            v,
            f"verified {v.client_id}: key {key_fingerprint(v.signature_key)}, "
            f"valid until {v.not_after:%Y-%m-%d}",
        )

    await _with_client(args, run)


# ---- KeyPackages --------------------------------------------------------------------------
async def cmd_keypackages(args: argparse.Namespace) -> None:
    if args.action != "claim" and args.user_id:
        hint = " (--count N publishes N)" if args.action == "publish" else ""
        raise RoostError(0, "invalid_arguments", f"{args.action} takes no user id{hint}")

    async def run(c: RoostClient) -> None:
        if args.action == "publish":
            res = await c.publish_key_packages(args.count, last_resort=args.last_resort)
            _emit(args, res, f"published {res.published} ({res.last_resort} last-resort)")
        elif args.action == "count":
            n = await c.key_package_count()
            _emit(args, n, f"{n.count} KeyPackages ({n.last_resort} last-resort)")
        else:
            if not args.user_id:
                raise RoostError(0, "invalid_arguments", "claim needs a user id")
            if args.client:  # one given client's package (none if it has none)
                kp = await c.claim_client_key_package(args.user_id, args.client, verify=True)
                kps = [kp] if kp is not None else []
            else:
                kps = await c.claim_key_packages(args.user_id, verify=True)
            refs = [c.cs.key_package_ref(kp.encode()) for kp in kps]
            if args.out:
                from roost.protocol.key_package_batch import encode_key_package_batch

                Path(args.out).write_bytes(encode_key_package_batch(kps))
            _emit(
                args,
                {"key_package_refs": refs},
                [f"claimed {len(kps)} KeyPackages"] + [f"  {b64u(r)}" for r in refs],  # as --json
            )

    await _with_client(args, run)


# ---- connections --------------------------------------------------------------------------
def _read_payload(path: str | None) -> bytes | None:
    if path is None:
        return None
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


async def cmd_connections(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        if args.action == "list":
            conns = await c.connections()
            lines = [
                f"{x.connection_id}  {x.requester} -> {x.responder}  {x.state}" for x in conns
            ] or ["no connections"]
            _emit(args, conns, lines)
            return
        if not args.target:
            raise RoostError(0, "invalid_arguments", f"{args.action} needs a target")
        payload = _read_payload(args.payload)
        groups = Groups(c)
        group_id: bytes | None = None
        if args.action == "request":
            if payload is None:
                # The usual way: the request carries the Welcome to a new two-user group.
                conn, group_id = await groups.request_connection(args.target)
            else:
                conn = await c.open_connection(args.target)
                conn = await c.send_connection_request(conn.connection_id, payload)
        elif args.action == "accept":
            conn, joined = await groups.accept_connection(args.target, reply=payload)
            if joined is not None and joined.kind == "joined":
                group_id = joined.group_id
        else:
            conn = await groups.reject_connection(args.target, reply=payload)
        line = f"{conn.connection_id}  {conn.requester} -> {conn.responder}  {conn.state}"
        if group_id is not None:  # named as `roost group list` names it
            gid = b64u(group_id)
            _emit(args, {**_jsonable(conn), "group_id": gid}, f"{line}  group {gid}")
            return
        _emit(args, conn, line)

    await _with_client(args, run)


# ---- queues -------------------------------------------------------------------------------
async def _hold_group_queue(c: RoostClient) -> None:
    """Make the key of this client's group queue (kept by ``Groups``) known to ``c``, claiming
    it first for a home written before queue keys."""
    await Groups(c).own_queue()


async def cmd_queue(args: argparse.Namespace) -> None:
    async def run(c: RoostClient) -> None:
        if args.queue and not c.queue(args.queue).claimed:
            await _hold_group_queue(c)  # the group queue: its key is in group_client.json
        if args.action == "create":
            qid = await c.create_queue()
            _emit(args, {"queue_id": qid}, qid)
        elif args.action == "delete":
            await c.delete_queue(_need_queue(args))
            _emit(args, {"deleted": args.queue}, "deleted")
        elif args.action == "fetch":
            if args.queue:
                r = await c.fetch_queue(
                    args.queue, args.after or 0, limit=args.limit, max_bytes=args.max_bytes
                )
                lines = [f"{m.seq}  {len(m.payload)} bytes" for m in r.messages]
                _emit(args, r, lines + [f"last {r.last_seq}, more: {r.has_more}"])
            else:
                d = await c.fetch_direct(args.after, limit=args.limit, max_bytes=args.max_bytes)
                lines = [
                    f"{e.seq}  {e.type}  from {e.sender or '-'}"
                    + (f"  connection {e.connection_id}" if e.connection_id else "")
                    + (f"  {len(e.payload)} bytes" if e.payload else "")
                    for e in d.events
                ]
                _emit(args, d, lines + [f"last {d.last_seq}, more: {d.has_more}"])
        elif args.action == "ack":
            if args.up_to is None:
                raise RoostError(0, "invalid_arguments", "ack needs --up-to")
            if args.queue:
                await c.ack_queue(args.queue, args.up_to)
            else:
                await c.ack_direct(args.up_to)
            _emit(args, {"acked": args.up_to}, f"acked up to {args.up_to}")
        else:  # send
            payload = _read_payload(args.payload or "-") or b""
            seq = await c.enqueue(_need_queue(args), payload, message_id=args.message_id)
            _emit(args, {"seq": seq}, f"enqueued as {seq}")

    await _with_client(args, run)


async def cmd_listen(args: argparse.Namespace) -> None:
    from roost.client.realtime import listen

    async def run(c: RoostClient) -> None:
        await _hold_group_queue(c)  # served too, as every queue whose key we hold
        got = 0
        async for d in listen(c):
            where = d.queue_id or "direct"
            if args.json:
                print(json.dumps(_jsonable(d)), flush=True)
            else:
                for m in d.messages:
                    print(f"{where}  {m.seq}  {len(m.payload)} bytes", flush=True)
            if args.ack:
                # Acks go over HTTP here: simple, and the socket keeps delivering meanwhile.
                if d.queue_id is None:
                    await c.ack_direct(d.last_seq)
                else:
                    await c.ack_queue(d.queue_id, d.last_seq)
            got += len(d.messages)
            if args.count and got >= args.count:
                return

    await _with_client(args, run)


def _need_queue(args: argparse.Namespace) -> str:
    if not args.queue:
        raise RoostError(0, "invalid_arguments", f"{args.action} needs --queue")
    return args.queue


# ---- demo ---------------------------------------------------------------------------------
def run_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args)


# ---- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="roost", description="Roost homeserver and client.")
    # The client options work before or after the command; after it, SUPPRESS keeps the
    # sub-parser from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    for parser, default in ((p, None), (common, argparse.SUPPRESS)):
        parser.add_argument(
            "--home", default=default, help="client state directory (default ~/.roost, $ROOST_HOME)"
        )
        parser.add_argument(
            "--server",
            default=default,
            help=f"homeserver URL (default {DEFAULT_SERVER}, $ROOST_SERVER)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            default=False if default is None else default,
            help="print results as JSON",
        )
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    def add(name: str, fn: Handler, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help, description=help)
        sp.set_defaults(handler=fn)
        return sp

    add_operator_commands(sub)

    r = add("register", cmd_register, "register a new user with this device as first client")
    r.add_argument("name")
    r.add_argument("--display-name")
    r.add_argument("--registration-token")
    r.add_argument("--discoverable", action="store_true", help="list in the user directory")
    r.add_argument("--password-stdin", action="store_true")
    r.add_argument("--no-password", action="store_true", help="no password (approval only)")
    r.add_argument("--cipher-suite", type=int, default=1)
    r.add_argument("--keypackages", type=int, default=0, help="also publish N KeyPackages")

    add("login", cmd_login, "get a fresh bearer token (proof of key possession)")
    add("whoami", cmd_whoami, "show this user and its clients")

    n = add("set-name", cmd_set_name, "change the display name")
    n.add_argument("display_name", nargs="?")
    n.add_argument("--clear", action="store_true")
    d = add("discoverable", cmd_discoverable, "opt in or out of directory search")
    d.add_argument("value", choices=["on", "off"])
    da = add("delete-account", cmd_delete_account, "delete this user, all clients and data")
    da.add_argument("--yes", action="store_true")

    ac = add("add-client", cmd_add_client, "make this device another client of a user")
    ac.add_argument("--user", help="user id (name@domain)")
    ac.add_argument("--approval", action="store_true", help="ask an existing client to approve")
    ac.add_argument("--complete", action="store_true", help="finish a pending approval request")
    ac.add_argument("--device-name")
    ac.add_argument("--wait", type=float, default=0, help="wait up to N seconds for approval")
    ac.add_argument("--password-stdin", action="store_true")
    ac.add_argument("--cipher-suite", type=int, default=1)
    cr = add("client-requests", cmd_client_requests, "list/approve/reject new-device requests")
    cr.add_argument("action", choices=["list", "approve", "reject"])
    cr.add_argument("request_id", nargs="?")
    rc = add("remove-client", cmd_remove_client, "remove a client of this user")
    rc.add_argument("client_uuid")

    lk = add("lookup", cmd_lookup, "look a user up by exact user id")
    lk.add_argument("user_id")
    se = add("search", cmd_search, "search the opt-in user directory")
    se.add_argument("query")
    se.add_argument("--limit", type=int)
    se.add_argument("--cursor")
    se.add_argument("--domain", help="search this domain's directory (through your server)")
    ve = add("verify", cmd_verify, "verify a client's credential against its domain's AS")
    ve.add_argument(
        "client_id", help="user@domain/<uuid>, or the <uuid> of one of your clients (`whoami`)"
    )

    kp = add("keypackages", cmd_keypackages, "publish, count or claim KeyPackages")
    kp.add_argument("action", choices=["publish", "count", "claim"])
    kp.add_argument("user_id", nargs="?", help="(claim) the user whose KeyPackages to claim")
    kp.add_argument("--count", type=int, default=10)
    kp.add_argument("--last-resort", type=int, default=1)
    kp.add_argument("--out", help="(claim) write the claimed packages here (MLS vector)")
    kp.add_argument("--client", help="(claim) only this client (its uuid) of the user")

    co = add("connections", cmd_connections, "connection requests: request/accept/reject/list")
    co.add_argument("action", choices=["list", "request", "accept", "reject"])
    co.add_argument("target", nargs="?", help="user id (request) or connection id")
    co.add_argument("--payload", help="message/mls payload file ('-' for stdin)")

    q = add("queue", cmd_queue, "fetch/ack the direct queue, or a group queue with --queue")
    q.add_argument("action", choices=["fetch", "ack", "create", "delete", "send"])
    q.add_argument("--queue", help="group-message queue id (default: the direct queue)")
    q.add_argument("--after", type=int, help="default: 0 (group), this client's last ack (direct)")
    q.add_argument("--limit", type=int)
    q.add_argument("--max-bytes", type=int)
    q.add_argument("--up-to", type=int)
    q.add_argument("--payload", help="(send) payload file ('-' for stdin)")
    q.add_argument("--message-id", help="(send) idempotency key")

    from . import groups as group_cli  # MLS groups via the Delivery Service

    group_cli.add_group_command(add, sys.modules[__name__])
    demo = sub.add_parser("demo", help="run a homeserver and a scripted three-user conversation")
    demo.set_defaults(sync_handler=run_demo)
    from .admin import add_admin_command  # operator tools on the configured database

    add_admin_command(sub)
    li = add("listen", cmd_listen, "print deliveries as they arrive (realtime WebSocket)")
    li.add_argument("--ack", action="store_true", help="ack each delivery after printing it")
    li.add_argument("--count", type=int, default=0, help="stop after N messages")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "sync_handler"):
        return args.sync_handler(args)
    try:
        asyncio.run(args.handler(args))
    except RoostError as e:
        if args.json:
            print(json.dumps({"error": e.code, "status": e.status, "detail": e.detail}))
        print(f"roost: {e.code}: {e.detail or e.title}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
