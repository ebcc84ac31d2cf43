"""The end of a convergence run: lift every fault, let all clients sync until quiet (bounded),
then judge what they hold against what the run did.

Convergence means, for every group the run made:

1. **One state.** Every live member — a client the group's DS says holds a leaf
   (``GroupOut.my_leaf``), of a user not deleted — holds the group at the DS's epoch, and all
   of them have the same roster and the same epoch authenticator. No two clients ever held
   different states for the same epoch of a group during the run (no fork).
2. **Every acknowledged message delivered exactly once, in order.** A message is acknowledged
   when the DS answered its send with a ``group_seq``. It must be delivered — decrypted, as a
   ``message`` event with that ``group_seq`` and text — exactly once to every client that is
   a member both in the message's epoch (the sender's roster when it encrypted) and in the
   DS's epoch when it was accepted (the DS fans out to its current leaves; it accepts the
   current and the previous epoch), other than the sender, and not a client of a user deleted
   since. A client that rejoined by resync (``resynced`` event) may miss messages of the
   epochs it could not process: those are counted separately and allowed only between the
   first item it could not process in that group and its resync (or, where its resync found
   it removed meanwhile, its removal). A client removed while
   away learns it from ``not_member``, reads its queue and forgets the group; messages of
   its old membership still in flight between servers then arrive for a group it no longer
   holds, or (a member on another server than the group's) never arrive: counted
   separately too. Each client sees the
   messages of a group in increasing ``group_seq`` and no message twice (acknowledged or
   not: an unacknowledged send may or may not have been stored, but never twice).
3. **Never without an admin.** The DS lists at least one admin among the group's member users.
   Where the last admin left or deleted its account, a member saw the DS's signed
   ``admin_promoted`` notice.
4. **No server error, no client crash, nothing stuck.** No 5xx other than unreachable, no
   exception of the client library, no realtime listener that died, no client that cannot
   sync, nothing left in any federation outbox.
5. **Each fault had its effect.** After a commit with a corrupted membership_tag every other
   member still in the group at the end rejoined (``resynced``) or was added again; every
   client added by a Welcome without the tree, or by a member bringing in its own clients,
   that is in the group at the end joined (``joined``) at that epoch or later.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from roost.client import RoostError
from roost.client.group_events import GroupEvent, roster_clients
from roost.client.group_sync import REMOVED_WHILE_OUT_OF_STEP

from .world import Device, Sent, World

SETTLE_TIMEOUT = 150.0  # > the outbox lease a killed server leaves behind (60 s)
QUIET_ROUNDS = 2


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)
    delivered: int = 0
    expected: int = 0
    missed_by_resync: int = 0
    missed_after_removal: int = 0
    resyncs: int = 0
    converge_seconds: float = 0.0
    # group -> the clients holding a leaf there at the end, as the DS says
    live: dict[bytes, set[str]] = field(default_factory=dict)
    # what the faults led to: "<effect>" -> [seen, expected]
    effects: dict[str, list[int]] = field(default_factory=dict)

    def effect(self, what: str, seen: bool) -> None:
        counts = self.effects.setdefault(what, [0, 0])
        counts[0] += seen
        counts[1] += 1

    def fail(self, text: str) -> None:
        self.failures.append(text)


async def settle(world: World, undo: object = None) -> float:
    """Every client syncs (committing pending proposals) until two rounds in a row bring
    nothing new and the members of each group agree; returns the seconds it took."""
    await world.stop_listeners()
    start = time.monotonic()
    for d in sorted(world.down):
        world.start_server(d)
    world.retry_all()
    quiet = 0
    failing: dict[str, str] = {}  # client -> the error its last sync ended with
    while time.monotonic() - start < SETTLE_TIMEOUT:
        busy = False
        for d in world.devices:
            try:
                if await world.sync(d):
                    busy = True
                failing.pop(d.client_id, None)
            except RoostError as e:
                failing[d.client_id] = f"{e.status} {e.code}: {e.detail}"
                busy = True
        world.observe()
        quiet = 0 if busy or not _agreed(world) else quiet + 1
        if quiet >= QUIET_ROUNDS:
            if _outboxes_empty(world):
                break
            # Items still on their way between servers (a killed server's delivery lease
            # lapses within a minute, docs/federation.md): not settled yet.
            quiet = 0
            world.retry_all()
        await asyncio.sleep(1.0)
    for client_id, error in sorted(failing.items()):
        world.problems.append(f"{client_id} cannot sync: {error}")
    return time.monotonic() - start


def _outboxes_empty(world: World) -> bool:
    return not any(
        row.get("outbox") == "federation" and row.get("depth")
        for domain in world.fed.domains
        for row in world.fed[domain].outbox()
    )


def _agreed(world: World) -> bool:
    for gid in world.groups:
        states = {
            (d.groups.group(gid).epoch, d.groups.group(gid).epoch_authenticator)
            for d in world.members(gid)
            if d.holds(gid)
        }
        if len(states) > 1:
            return False
    return True


async def check(world: World) -> Verdict:
    v = Verdict()
    v.failures += world.forks
    v.failures += world.problems
    for gid in world.groups:
        await _check_group(world, gid, v)
    _check_messages(world, v)
    _check_outboxes(world, v)
    _check_fault_effects(world, v)
    return v


def _events(world: World, client_id: str, gid: bytes, kinds: set[str]) -> list[GroupEvent]:
    d = world.device(client_id)
    if d is None:
        return []
    return [e for e in d.events if e.group_id == gid and e.kind in kinds]


def _check_fault_effects(world: World, v: Verdict) -> None:
    """Each injected fault did what it is there for (rule 5; the promotion notice of rule 3)."""
    for gid, epoch, committer in world.corrupted:
        name = gid.decode(errors="replace")
        others = (world.roster_at(gid, epoch) or frozenset()) - {committer}
        for cid in sorted(others & v.live.get(gid, set())):
            back = [e for e in _events(world, cid, gid, {"resynced", "joined"}) if e.epoch >= epoch]
            v.effect("members resynced after a corrupted commit", bool(back))
            if not back:
                v.fail(
                    f"group {name}: {cid} neither resynced nor joined again after the commit "
                    f"of epoch {epoch} with a corrupted membership_tag; " + _why(world, cid, gid)
                )
    for what, adds in (
        ("joined from a Welcome without the tree", world.treeless_adds),
        ("own clients added by a member joined", world.own_adds),
    ):
        for gid, epoch, added in adds:
            for cid in sorted(set(added) & v.live.get(gid, set())):
                joins = _events(world, cid, gid, {"joined", "resynced"})
                v.effect(what, any(e.epoch == epoch for e in joins))
                if not any(e.epoch >= epoch for e in joins):
                    v.fail(
                        f"group {gid.decode(errors='replace')}: {cid}, added at epoch {epoch} "
                        f"({what}), never joined; " + _why(world, cid, gid)
                    )
    for gid in world.admin_gone:
        seen = [
            d.client_id
            for d in world.devices
            if any(
                e.kind == "notice"
                and e.group_id == gid
                and (e.notice or {}).get("type") == "admin_promoted"
                for e in d.events
            )
        ]
        v.effect("last admin gone: admin_promoted notice seen", bool(seen))
        if not seen:
            v.fail(
                f"group {gid.decode(errors='replace')}: its last admin went, no member saw "
                "an admin_promoted notice"
            )


def _check_outboxes(world: World, v: Verdict) -> None:
    """Nothing left in any server's federation outbox (``roost admin outbox``)."""
    for domain in world.fed.domains:
        for row in world.fed[domain].outbox():
            if row.get("outbox") == "federation" and row.get("depth"):
                v.fail(f"{domain}'s outbox still holds items: {row}")


async def _ds_view(world: World, gid: bytes) -> tuple[int, dict[str, str], list[Device]] | None:
    """(DS epoch, roles, live member devices) as the DS answers each client."""
    epoch, roles, live = None, None, []
    for d in world.devices:
        try:
            info = await d.groups.info(gid)
        except RoostError as e:
            if e.status in (403, 404):
                continue
            raise
        if info.my_leaf is None:
            continue
        epoch, roles = info.epoch, info.roles
        live.append(d)
    if epoch is None or roles is None:
        return None
    return epoch, roles, live


async def _check_group(world: World, gid: bytes, v: Verdict) -> None:
    view = await _ds_view(world, gid)
    name = gid.decode(errors="replace")
    if view is None:
        v.fail(f"group {name}: no live member left")
        return
    epoch, roles, live = view
    v.live[gid] = {d.client_id for d in live}
    states = {}
    for d in live:
        if not d.holds(gid):
            v.fail(f"group {name}: {d.client_id} holds a leaf at the DS but not the group")
            continue
        g = d.groups.group(gid)
        states[d.client_id] = (
            g.epoch,
            frozenset(roster_clients(g).values()),
            g.epoch_authenticator,
        )
    distinct = set(states.values())
    if len(distinct) > 1:
        summary = {c: (e, sorted(r)) for c, (e, r, _) in states.items()}
        v.fail(f"group {name}: members disagree (DS epoch {epoch}): {summary}")
    for c, (e, roster, _) in states.items():
        if e != epoch:
            v.fail(f"group {name}: {c} at epoch {e}, the DS at {epoch}; " + _why(world, c, gid))
        if set(roster) != {d.client_id for d in live}:
            v.fail(
                f"group {name}: {c}'s roster {sorted(roster)} is not the DS's live members "
                f"{sorted(d.client_id for d in live)}"
            )
    member_users = {d.user.user_id for d in live}
    if not any(roles.get(u) == "admin" for u in member_users):
        v.fail(f"group {name}: no admin among {sorted(member_users)} (roles {roles})")


def _why(world: World, client_id: str, gid: bytes) -> str:
    """What the client could not process in the group (its ``rejected`` events)."""
    d = world.device(client_id)
    if d is None:
        return ""
    rejected = [
        f"seq {e.group_seq}: {e.text}"
        for e in d.events
        if e.kind == "rejected" and e.group_id == gid
    ]
    listening = " (listening over realtime)" if d.listened else ""
    joined = [
        (e.epoch, e.text) for e in d.events if e.kind in ("joined", "removed") and e.group_id == gid
    ]
    forgot = " (forgot it after not_member)" if (gid, client_id) in world.forgotten else ""
    return f"joined/removed {joined}{forgot}; rejected{listening}: {rejected[:3] or 'nothing'}"


def _messages(d: Device) -> dict[bytes, list[GroupEvent]]:
    out: dict[bytes, list[GroupEvent]] = defaultdict(list)
    for e in d.events:
        if e.kind == "message" and e.sender != d.client_id:
            out[e.group_id].append(e)
    return out


def _resync_windows(d: Device, gid: bytes) -> list[tuple[int, float]]:
    """Per episode of ``d`` in ``gid`` (a membership may have several): (group_seq of the
    first item it could not process, epoch it rejoined at by resync); when its resync found
    it removed meanwhile, every later epoch."""
    windows: list[tuple[int, float]] = []
    start: int | None = None
    for e in d.events:
        if e.group_id != gid:
            continue
        if e.kind == "joined":
            start = None  # a new membership
        elif e.kind == "rejected" and start is None:
            start = e.group_seq
        elif e.kind == "resynced" and start is not None:
            windows.append((start, e.epoch))
            start = None
        elif e.kind == "removed" and e.text == REMOVED_WHILE_OUT_OF_STEP and start is not None:
            windows.append((start, math.inf))
            start = None
    return windows


def _in_flight_at_removal(world: World, d: Device, s: Sent) -> bool:
    """The message was still on its way between servers when ``d`` was removed: ``d``, told
    ``not_member`` by the DS, read its queue and forgot the group, and the message arrived
    later for a group it no longer holds, or never (for a member on another server than
    the group's)."""
    if (s.group_id, d.client_id) not in world.forgotten:
        return False
    if s.group_id.rpartition(b"@")[2].decode() != d.domain and not any(
        e.kind == "rejected" and e.group_id == s.group_id and e.group_seq == s.group_seq
        for e in d.events
    ):
        return True
    return any(
        e.kind == "rejected"
        and e.group_id == s.group_id
        and e.group_seq == s.group_seq
        and e.text == "message for a group we are not in"
        for e in d.events
    )


def _member_then(world: World, d: Device, gid: bytes, s: Sent) -> bool:
    """``d`` had joined (created, or joined from a Welcome it could use) by the message's
    epoch and stayed in the group from that join to the message (a client removed and added
    again whose new Welcome could not be used is not in the later membership), was not
    removed before it used that Welcome (the DS drops what it held for a removed leaf), and
    had not left before the message (a leaving client reads what was sent before its leave
    proposal, and nothing after it)."""
    joins = [e.epoch for e in d.events if e.group_id == gid and e.kind == "joined"]
    if not any(j <= s.epoch for j in joins):
        return False
    # The membership the message falls in began at ``j``; if the client's leaf was removed
    # before the client used that Welcome, the DS dropped what it held for the leaf.
    j = max(x for x in joins if x <= s.epoch)
    seen_at = world.joins_seen.get((d.client_id, gid, j), j)
    for e in range(j + 1, max(seen_at, s.epoch) + 1):
        roster = world.roster_at(gid, e)
        if roster is not None and d.client_id not in roster:
            return False
    for g, cid, seq, epoch in world.leaves:
        left = g == gid and cid == d.client_id and seq < s.group_seq
        if left and not any(epoch < j <= s.epoch for j in joins):
            return False
    return True


def _check_messages(world: World, v: Verdict) -> None:
    v.resyncs = sum(1 for d in world.devices for e in d.events if e.kind == "resynced")
    received = {d.client_id: _messages(d) for d in world.devices}
    for d in world.devices:
        for gid, events in received[d.client_id].items():
            seqs = [e.group_seq for e in events]
            if seqs != sorted(seqs):
                v.fail(f"{d.client_id} got group {gid!r}'s messages out of order: {seqs}")
            texts = Counter(e.data for e in events)
            for text, n in texts.items():
                if n > 1:
                    v.fail(f"{d.client_id} got {text!r} {n} times")
    for s in world.sent:
        if not s.acked:
            continue
        at_send = world.roster_at(s.group_id, s.epoch)
        at_ds = world.roster_at(s.group_id, s.ds_epoch)
        if at_send is None or at_ds is None:
            v.fail(f"message {s.text!r}: epoch {s.epoch}/{s.ds_epoch} never observed")
            continue
        for cid in sorted((at_send & at_ds) - {s.sender}):
            d = world.device(cid)
            if d is None or not d.live or not _member_then(world, d, s.group_id, s):
                continue
            v.expected += 1
            got = [e for e in received[cid].get(s.group_id, []) if e.data == s.text.encode()]
            if len(got) == 1 and got[0].group_seq == s.group_seq:
                v.delivered += 1
                continue
            if not got and _in_flight_at_removal(world, d, s):
                v.missed_after_removal += 1
                continue
            windows = _resync_windows(d, s.group_id)
            if not got and any(a <= s.group_seq and s.epoch < b for a, b in windows):
                v.missed_by_resync += 1
                continue
            v.fail(
                f"message {s.text!r} (group_seq {s.group_seq}, epoch {s.epoch}, DS epoch "
                f"{s.ds_epoch}) reached {cid} {len(got)} times"
                + (f" at {[e.group_seq for e in got]}" if got else "")
                + "; "
                + _why(world, cid, s.group_id)
                + "; "
                + _around(d, s.group_id, s.group_seq)
            )


def _around(d: Device, gid: bytes, seq: int) -> str:
    """What ``d`` saw of ``gid`` near ``seq`` (kind, group_seq, epoch), for a missed message."""
    near = [
        f"{e.kind} {e.group_seq}/e{e.epoch}"
        for e in d.events
        if e.group_id == gid and abs(e.group_seq - seq) <= 4
    ]
    listening = "listening" if d.listened else "syncing"
    return f"{listening}; seen near it: {near or 'nothing'}"


def table(world: World, verdict: Verdict, ops: int, wall: float) -> str:
    """What a run did and saw, one line each (for the soak script and failing tests)."""
    sent = [s for s in world.sent]
    rows = [
        ("operations", str(ops)),
        ("operations by kind", _counts(world.ops)),
        ("seconds by kind", ", ".join(f"{k} {t:.0f}" for k, t in world.seconds.most_common())),
        ("faults injected", _counts(world.faults) or "none"),
        ("answers given up on", _counts(world.outcomes) or "none"),
        ("messages sent / acknowledged", f"{len(sent)} / {sum(s.acked for s in sent)}"),
        ("  of which resent with the same id", str(sum(s.retried for s in sent))),
        ("deliveries expected / delivered", f"{verdict.expected} / {verdict.delivered}"),
        ("missed by resynced clients", str(verdict.missed_by_resync)),
        ("arrived after the client learnt of its removal", str(verdict.missed_after_removal)),
        ("resyncs", str(verdict.resyncs)),
        ("resyncs by cause", _counts(resync_causes(world)) or "none"),
        (
            "effects of faults (seen / expected)",
            ", ".join(f"{k} {n}/{m}" for k, (n, m) in sorted(verdict.effects.items())) or "none",
        ),
        ("groups / clients", f"{len(world.groups)} / {len(world.devices)}"),
        ("time to converge", f"{verdict.converge_seconds:.1f} s"),
        ("wall time", f"{wall:.1f} s"),
        ("failures", str(len(verdict.failures))),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def resync_causes(world: World) -> Counter[str]:
    """``resynced`` events by why the client rejoined (numbers left out)."""
    causes: Counter[str] = Counter()
    for d in world.devices:
        for e in d.events:
            if e.kind == "resynced":
                reason = e.text.partition("(")[2].rstrip(")") or e.text
                causes[re.sub(r"\d+", "N", reason)[:60]] += 1
    return causes


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
