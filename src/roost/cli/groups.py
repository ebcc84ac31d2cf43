"""``roost group …``: MLS groups through the Delivery Service, on the client in ``--home``.

Groups are named by the base64url of their group id (as ``roost group list`` prints them).
Joining an ``external_join`` group one was never in takes the group's key too: ``create
--external-join`` prints ``<group id>#<key>`` to hand to whoever may join, and ``join`` takes
that form (or ``--key``); ``key <group>`` shows that invitation to any member holding the key.
The key is a secret of the group's members.
Incoming traffic (Welcomes, commits, messages, server notices) is processed by ``sync`` and
``listen``; every command that changes a group first catches up with it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from roost.client import RoostClient, RoostError
from roost.client.group_key import GroupKeyError, parse_group_key
from roost.client.groups import GroupEvent, Groups
from roost.protocol.base64url import b64u, unb64u

ACTIONS = [
    "create",
    "list",
    "info",
    "invite",
    "add-devices",
    "send",
    "sync",
    "listen",
    "history",
    "update",
    "commit",
    "leave",
    "remove",
    "promote",
    "demote",
    "policy",
    "delete",
    "join",
    "resync",
    "key",
]


def format_event(ev: GroupEvent) -> str:
    gid = b64u(ev.group_id)[:8] if ev.group_id else "-"
    if ev.kind == "message":
        return f"[{gid} #{ev.group_seq}] {ev.sender}: {ev.message}"
    if ev.kind == "notice":
        return f"[{gid} #{ev.group_seq}] homeserver notice (verified): {ev.text}"
    return f"[{gid} #{ev.group_seq}] {ev.kind}: {ev.text}".rstrip(": ")


def _gid(args: argparse.Namespace) -> bytes:
    return _gid_and_key(args)[0]


def _gid_and_key(args: argparse.Namespace) -> tuple[bytes, bytes | None]:
    """The group id, and the group's key when given (``<group id>#<key>`` or ``--key``)."""
    if not args.group:
        raise RoostError(0, "invalid_arguments", f"group {args.action} needs a group id")
    gid_text, _, key_text = args.group.partition("#")
    key_text = key_text or (args.key or "")
    try:
        gid = unb64u(gid_text)
    except ValueError as e:
        raise RoostError(0, "invalid_arguments", f"bad group id: {e}") from None
    try:
        return gid, parse_group_key(key_text) if key_text else None
    except GroupKeyError as e:
        raise RoostError(0, "invalid_arguments", f"bad group key: {e}") from None


def _need(args: argparse.Namespace, n: int, what: str) -> list[str]:
    if len(args.rest) < n:
        raise RoostError(0, "invalid_arguments", f"group {args.action} needs {what}")
    return args.rest


def _caught_up(args: argparse.Namespace, events: list[GroupEvent]) -> None:
    """What the sync before an action read, shown first (it is in the history either way);
    ``--json`` prints only the action's own result."""
    if not args.json:
        for ev in events:
            print(format_event(ev))


async def _run(args: argparse.Namespace, c: RoostClient, emit: Callable[..., None]) -> None:
    g = Groups(c)
    action = args.action
    if action == "create":
        invitees = ([args.group] if args.group else []) + args.rest  # no group id yet
        group = await g.create(external_join=args.external_join)
        out: dict[str, Any] = {"group_id": b64u(group.group_id), "epoch": group.epoch}
        if invitees:
            await g.invite(group.group_id, invitees, ratchet_tree_in_welcome=not args.no_tree)
            out["epoch"] = g.group(group.group_id).epoch
        text = f"created group {out['group_id']} (epoch {out['epoch']})"
        key = g.group_key(group.group_id)
        if args.external_join and key is not None:
            # Joining by external commit takes the key: the invitation carries it.
            out["join"] = f"{out['group_id']}#{b64u(key)}"
            text += f"\nothers join with: roost group join {out['join']}"
        return emit(out, text)
    if action == "list":
        groups = await g.list()
        local = set(g.local_group_ids())

        def named(gid: bytes) -> str:  # the name a page gave the group, if we hold its state
            name = g.group_name(gid) if gid in local else None
            return "" if name is None else f"  name {name!r}"

        lines = [
            f"{b64u(s.group_id)}  epoch {s.epoch}  seq {s.group_seq}  roles {s.roles}"
            + named(s.group_id)
            for s in groups
        ]
        return emit(groups, lines or "no groups")
    if action == "info":
        s = await g.info(_gid(args))
        return emit(s, f"{b64u(s.group_id)}  epoch {s.epoch}  roles {s.roles}")
    if action == "sync":
        events = await g.sync(auto_commit=args.auto_commit)
        return emit(events, [format_event(ev) for ev in events] or "nothing new")
    if action == "listen":
        # Pushed over the realtime socket (--poll: HTTP polling every --interval seconds);
        # JSON output: one object per line. --seconds 0: until interrupted.
        stop = asyncio.Event()
        if args.seconds > 0:
            asyncio.get_running_loop().call_later(args.seconds, stop.set)
        await g.listen(
            lambda ev: emit(ev, format_event(ev)),
            stop=stop,
            realtime=not args.poll,
            poll_interval=args.interval,
            auto_commit=args.auto_commit,
        )
        return None
    if action == "history":
        entries = g.history.entries(_gid(args), last=args.last)
        lines = [
            f"#{e.seq} {'>' if e.outgoing else '<'} {e.sender or 'homeserver'}: {e.text}"
            for e in entries
        ]
        return emit(entries, lines or "no history")
    if action == "join":
        gid, key = _gid_and_key(args)
        ev = await g.join_external(gid, key=key)
        return emit(ev, format_event(ev))
    if action == "key":  # the invitation a member hands on: <group>#<key>, a members' secret
        gid = _gid(args)
        key = g.group_key(gid)
        if key is None:
            raise RoostError(0, "no_group_key", "this client holds no key for that group")
        join = f"{b64u(gid)}#{b64u(key)}"
        return emit({"group_id": b64u(gid), "join": join}, f"roost group join {join}")
    if action == "resync":  # rejoin in place of our own leaf: our state is lost or stale
        ev = await g.resync(_gid(args))
        return emit(ev, format_event(ev))
    if action == "add-devices":  # our user's other clients, into one group or all of ours
        _caught_up(args, await g.sync())
        events = await g.add_own_devices(_gid(args) if args.group else None)
        return emit(events, [format_event(ev) for ev in events] or "no device to add")
    gid = _gid(args)
    _caught_up(args, await g.sync())  # act on the current epoch
    if action == "invite":
        ev = await g.invite(
            gid, _need(args, 1, "user ids"), ratchet_tree_in_welcome=not args.no_tree
        )
    elif action == "send":
        text = " ".join(_need(args, 1, "a message"))
        sent = await g.send(gid, text, message_id=args.message_id)
        return emit(sent, f"sent #{sent.group_seq} (message id {sent.message_id})")
    elif action in ("update", "commit"):
        ev = await g.commit(gid)
    elif action == "leave":
        seq = await g.leave(gid)
        return emit({"group_seq": seq}, f"left (proposal #{seq}; a member commits it)")
    elif action == "remove":
        ev = await g.remove(gid, _need(args, 1, "a user id")[0])
    elif action in ("promote", "demote"):
        user = _need(args, 1, "a user id")[0]
        role = "admin" if action == "promote" else "member"
        await g.set_role(gid, user, role)
        return emit({"user_id": user, "role": role}, f"{user} is now {role}")
    elif action == "policy":
        policy = None if args.clear else " ".join(_need(args, 1, "a policy (or --clear)"))
        await g.set_policy(gid, policy)
        return emit({"policy": policy}, f"notification policy: {policy or 'default'}")
    elif action == "delete":
        await g.delete(gid)
        return emit({"deleted": b64u(gid)}, "group deleted")
    else:  # pragma: no cover - argparse restricts the choices
        raise RoostError(0, "invalid_arguments", action)
    return emit(ev, format_event(ev))


def add_group_command(add: Callable[..., argparse.ArgumentParser], helpers: Any) -> None:
    """Register ``roost group``; ``helpers`` is the main module (``_with_client``, ``_emit``)."""

    async def cmd_group(args: argparse.Namespace) -> None:
        def emit(value: Any, text: Any = None) -> None:
            helpers._emit(args, value, text)

        await helpers._with_client(args, lambda c: _run(args, c, emit))

    gp = add("group", cmd_group, "MLS groups: create, invite, send, sync/listen, leave, …")
    gp.add_argument("action", choices=ACTIONS)
    gp.add_argument(
        "group",
        nargs="?",
        help="group id (base64url, from `roost group list`); join: <group>#<key> (from `key`)",
    )
    gp.add_argument("rest", nargs="*", help="user ids (invite/remove/promote) or message text")
    gp.add_argument(
        "--external-join",
        action="store_true",
        help="(create) allow external joins; prints the <group>#<key> that joiners need",
    )
    gp.add_argument(
        "--key",
        help="(join) the group's key (base64url), if not given as <group>#<key>",
    )
    gp.add_argument(
        "--no-tree",
        action="store_true",
        help="(create/invite) a smaller Welcome without the ratchet tree (joiners fetch it)",
    )
    gp.add_argument("--message-id", help="(send) idempotency key for a retried send")
    gp.add_argument("--seconds", type=float, default=0.0, help="(listen) how long (0: ever)")
    gp.add_argument("--poll", action="store_true", help="(listen) poll instead of realtime")
    gp.add_argument(
        "--auto-commit",
        action="store_true",
        help="(sync/listen) commit received proposals (leaves, the homeserver's Removes)",
    )
    gp.add_argument("--interval", type=float, default=1.0, help="(listen --poll) poll interval")
    gp.add_argument("--last", type=int, help="(history) only the last N entries")
    gp.add_argument("--clear", action="store_true", help="(policy) back to the default")
