"""The operations of a convergence run, chosen by a seeded ``random.Random``: what users do
(send, resend, sync, add, remove, update, leave, new devices, display names, promote, create,
delete an account) and the faults (servers stopped, killed, blocked; a corrupted commit; a
Welcome without its tree).

Each operation picks its arguments only among valid ones (members to remove, admins to add,
at least two member users left, ...) and behaves as a real app would: on ``epoch_conflict`` /
``epoch_too_old`` it syncs and tries again (bounded), on ``not_member`` it forgets the group,
on an unreachable server it gives up for now. Unexpected answers (a 5xx other than
unreachable, a client-side exception) are recorded as problems for the checks.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from roost.client import RoostError
from roost.client.groups import GroupEvent, group_path
from roost.mls.framing import MLSMessage
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.media_types import MLS_MEDIA_TYPE

from .world import TRANSIENT, Device, Sent, User, World

# Operations chosen never: each triggers a problem this test found that is not fixed yet, or
# waits for a fix on another branch (remove the entry once it is merged). Each says why.
PENDING_FAULTS: dict[str, str] = {}

MAX_GROUPS = 6
MAX_GROUP_USERS = 6
MAX_DEVICES = 3
SEND_ATTEMPTS = 3
DOWN_FOR = (6, 20)  # operations a stopped server stays down
BLOCK_FOR = (6, 20)  # operations a federation block lasts
MAX_STOPS, MAX_KILLS, MAX_BLOCKS = 1, 1, 1  # each costs seconds of restarts and CLI runs
RESEND_SHARE = 0.25  # acknowledged sends retried with the same message id


def joined_by_creating(gid: bytes, client_id: str) -> GroupEvent:
    """The creator's start in the group (``Groups.create`` returns the group, no event)."""
    return GroupEvent("joined", gid, client_id, epoch=0, text="created")


class Skip(Exception):
    """The chosen operation has no valid arguments right now: choose another."""


@dataclass
class Run:
    """One seeded sequence of operations over a world."""

    world: World
    ops: int
    enabled: set[str] = field(default_factory=set)
    done: int = 0
    # op number -> what to undo then (restart a server, lift a block)
    scheduled: list[tuple[int, str, Callable[[], Awaitable[None]]]] = field(default_factory=list)
    deleted_account: bool = False
    sends: int = 0

    @property
    def rng(self) -> Any:
        return self.world.rng

    def on(self, name: str) -> bool:
        return name not in PENDING_FAULTS or name in self.enabled

    # ---- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        table = self.table()
        names = sorted(table)
        weights = [table[n][0] for n in names]
        while self.done < self.ops:
            await self._due()
            for _ in range(20):
                name = self.rng.choices(names, weights)[0]
                if not self.on(name):
                    continue
                try:
                    await self._attempt(name, table[name][1])
                except Skip:
                    continue
                break
            self.done += 1
            self.world.observe()
            for failure in self.world.listener_failures():
                if failure not in self.world.problems:
                    self.world.problems.append(failure)

    async def _attempt(self, name: str, op: Callable[[], Awaitable[None]]) -> None:
        start = time.monotonic()
        try:
            await op()
        except Skip:
            raise
        except RoostError as e:
            self._answer(name, e)
        except Exception as e:  # noqa: BLE001 - the run goes on; the checks report it
            self.world.problems.append(f"op {self.done} {name}: {type(e).__name__}: {e}")
        self.world.ops[name] += 1
        self.world.seconds[name] += time.monotonic() - start

    def _answer(self, name: str, e: RoostError) -> None:
        w = self.world
        if e.status in TRANSIENT:
            w.outcomes[f"{name}: {e.status} {e.code}"] += 1
        elif e.status >= 500:
            w.problems.append(f"op {self.done} {name}: {e.status} {e.code}: {e.detail}")
        else:
            w.outcomes[f"{name}: {e.status} {e.code}"] += 1

    async def _due(self) -> None:
        due = [s for s in self.scheduled if s[0] <= self.done]
        self.scheduled = [s for s in self.scheduled if s[0] > self.done]
        for _, what, undo in due:
            self.world.note(f"op {self.done}: {what}")
            await undo()

    async def undo_all(self) -> None:
        """Lift every fault still in force (servers back, blocks lifted)."""
        pending, self.scheduled = self.scheduled, []
        for _, what, undo in pending:
            self.world.note(f"end: {what}")
            await undo()

    def table(self) -> dict[str, tuple[float, Callable[[], Awaitable[None]]]]:
        return {
            "send": (30, self.send),
            "sync": (18, self.sync),
            "update": (7, self.update),
            "add": (7, self.add),
            "remove": (4, self.remove),
            "leave": (3, self.leave),
            "promote": (2, self.promote),
            "create_group": (2, self.create_group),
            "new_device": (1.5, self.new_device),
            "own_devices_by_member": (1.5, self.own_devices_by_member),
            "display_name": (2, self.display_name),
            "delete_account": (1, self.delete_account),
            "stop_server": (0.8, self.stop_server),
            "kill_server": (0.8, self.kill_server),
            "federation_block": (0.8, self.federation_block),
            "corrupt_membership_tag": (1.5, self.corrupt_membership_tag),
            "welcome_without_tree": (1.5, self.welcome_without_tree),
            "last_admin_goes": (1.5, self.last_admin_goes),
            "commit_without_sync": (3, self.commit_without_sync),
            "re_add_stale_member": (2, self.re_add_stale_member),
        }

    # ---- choosing ------------------------------------------------------------------------------
    def pick(self, items: list[Any]) -> Any:
        if not items:
            raise Skip
        return items[self.rng.randrange(len(items))]

    def usable_groups(self) -> list[bytes]:
        """Groups whose DS is up and that still have members."""
        w = self.world
        return [
            g for g in w.groups if g.rpartition(b"@")[2].decode() not in w.down and w.members(g)
        ]

    def actors(self, gid: bytes) -> list[Device]:
        w = self.world
        return [d for d in w.members(gid) if w.acts(d) and d.holds(gid)]

    async def roles(self, gid: bytes) -> dict[str, str]:
        for d in self.actors(gid):
            try:
                return (await d.groups.info(gid)).roles
            except RoostError as e:
                if e.status in (403, 404) or e.status in TRANSIENT:
                    continue
                raise
        raise Skip

    async def admin_devices(self, gid: bytes) -> tuple[list[Device], dict[str, str]]:
        roles = await self.roles(gid)
        return [d for d in self.actors(gid) if roles.get(d.user.user_id) == "admin"], roles

    # ---- user operations -----------------------------------------------------------------------
    async def sync(self) -> None:
        w = self.world
        d = self.pick([d for d in w.devices if w.acts(d)])
        await w.sync(d)

    async def send(self) -> None:
        w = self.world
        d = self.pick([d for d in w.devices if w.acts(d) and d.local_groups()])
        gid = self.pick(d.local_groups())
        self.sends += 1
        rec = Sent(gid, f"#{self.sends} from {d.client_id} op {self.done}", d.client_id, 0)
        w.sent.append(rec)
        mid = f"{self.rng.getrandbits(64):016x}"
        for _ in range(SEND_ATTEMPTS):
            try:
                sent = await d.groups.send(gid, rec.text, message_id=mid)
            except RoostError as e:
                if e.code in ("epoch_too_old", "epoch_conflict"):
                    await w.sync(d)  # behind the group: catch up, encrypt again
                    if not d.holds(gid):
                        return
                    continue
                if e.code == "not_member":
                    # Removed while away: read what arrived before the removal, then forget.
                    await w.sync(d)
                    d.groups.store.forget(gid)
                    w.forgotten.add((gid, d.client_id))
                    w.note(f"op {self.done}: {d.client_id} forgets {gid!r} (not_member)")
                raise
            rec.acked, rec.group_seq = True, sent.group_seq
            rec.epoch = MLSMessage.decode(sent.ciphertext).body.epoch  # type: ignore[union-attr]
            if self.rng.random() < RESEND_SHARE:
                # The answer "was lost": the app sends the same bytes with the same id again.
                rec.retried = True
                again = await d.groups.send_raw(gid, sent.ciphertext, message_id=mid)
                if again.group_seq != sent.group_seq:
                    w.problems.append(
                        f"resend of message id {mid} got group_seq {again.group_seq}, "
                        f"first {sent.group_seq}"
                    )
            rec.ds_epoch = rec.epoch
            try:
                rec.ds_epoch = (await d.groups.info(gid)).epoch
            except RoostError as e:
                if e.status not in TRANSIENT:
                    raise
            return

    async def update(self) -> None:
        gid = self.pick(self.usable_groups())
        d = self.pick(self.actors(gid))
        await self.world.sync(d)
        if d.holds(gid):
            d.events.append(await d.groups.update(gid))

    def stale(self, u: User, gid: bytes) -> bool:
        """A client of ``u`` still holds ``gid`` though it is no longer in it (removed while
        away: the DS sends a removed client nothing, not even the removing commit)."""
        roster = {d.client_id for d in self.world.members(gid)}
        return any(d.holds(gid) and d.client_id not in roster for d in u.devices)

    async def add(self, *, tree_in_welcome: bool = True, stale: bool = False) -> None:
        w = self.world
        gid = self.pick(self.usable_groups())
        admins, _ = await self.admin_devices(gid)
        d = self.pick(admins)
        members = w.member_users(gid)
        if len(members) >= MAX_GROUP_USERS:
            raise Skip
        u = self.pick(
            [
                u
                for u in w.users
                if not u.deleted
                and u not in members
                and u.domain not in w.down
                and self.stale(u, gid) == stale
            ]
        )
        await w.sync(d)  # also committing what others proposed (commits catch up by themselves)
        if not d.holds(gid):
            return
        try:
            if tree_in_welcome:
                ev = await d.groups.invite(gid, [u.user_id])
            else:
                ev = await d.groups.invite(gid, [u.user_id], ratchet_tree_in_welcome=False)
                w.treeless_adds.append((gid, ev.epoch, ev.added))
                w.faults["welcome_without_tree"] += 1
            d.events.append(ev)
        finally:
            await self.top_up(u)

    async def top_up(self, u: User) -> None:
        """The invited user's clients publish fresh KeyPackages when they run low."""
        from .world import KEY_PACKAGE_LOW, KEY_PACKAGES

        for d in u.devices:
            if not self.world.online(d):
                continue
            try:
                if (await d.client.key_package_count()).count < KEY_PACKAGE_LOW:
                    await d.client.publish_key_packages(KEY_PACKAGES)
            except RoostError as e:
                if e.status not in TRANSIENT:
                    raise

    async def remove(self) -> None:
        w = self.world
        gid = self.pick(self.usable_groups())
        admins, _ = await self.admin_devices(gid)
        d = self.pick(admins)
        members = w.member_users(gid)
        if len(members) < 3:
            raise Skip
        target = self.pick([u for u in members if u is not d.user])
        await w.sync(d)
        if d.holds(gid):
            d.events.append(await d.groups.remove(gid, target.user_id))
            w.note(f"op {self.done}: {d.client_id} removes {target.user_id} from {gid!r}")

    async def leave(self, *, last_admin: bool = False) -> None:
        w = self.world
        gid = self.pick(self.usable_groups())
        members = w.member_users(gid)
        if len(members) < 3:
            raise Skip
        roles = await self.roles(gid)
        admins = {u for u in members if roles.get(u.user_id) == "admin"}

        def last_admin_device(d: Device) -> bool:
            in_group = [x for x in w.members(gid) if x.user is d.user]
            return admins == {d.user} and len(in_group) == 1

        d = self.pick([d for d in self.actors(gid) if last_admin_device(d) == last_admin])
        await w.sync(d)
        if not d.holds(gid):
            return
        epoch = d.groups.group(gid).epoch
        seq = await d.groups.leave(gid)
        w.note(f"op {self.done}: {d.client_id} leaves {gid!r} at seq {seq} epoch {epoch}")
        w.leaves.append((gid, d.client_id, seq, epoch))
        if last_admin:
            w.admin_gone.append(gid)
            w.faults["last_admin_left"] += 1
        # Another member's app commits the leave when it next syncs.
        await self.commit_proposals(gid)

    async def commit_proposals(self, gid: bytes) -> None:
        others = self.actors(gid)
        if others:
            await self.world.sync(self.pick(others))

    async def promote(self) -> None:
        gid = self.pick(self.usable_groups())
        admins, roles = await self.admin_devices(gid)
        d = self.pick(admins)
        u = self.pick([u for u in self.world.member_users(gid) if roles.get(u.user_id) != "admin"])
        await d.groups.promote(gid, u.user_id)

    async def create_group(self) -> None:
        w = self.world
        if len(w.groups) >= MAX_GROUPS:
            raise Skip
        d = self.pick([d for d in w.devices if w.acts(d)])
        group = await d.groups.create()
        w.groups.append(group.group_id)
        d.events.append(joined_by_creating(group.group_id, d.client_id))
        others = [
            u for u in w.users if u is not d.user and not u.deleted and u.domain not in w.down
        ]
        for u in self.rng.sample(others, min(len(others), self.rng.randint(1, 3))):
            try:
                d.events.append(await d.groups.invite(group.group_id, [u.user_id]))
            finally:
                await self.top_up(u)

    async def new_device(self) -> None:
        """A user adds a client; where the user is admin it brings the client into its groups
        (``invite`` of its own user id)."""
        w = self.world
        u = self.pick(
            [
                u
                for u in w.users
                if not u.deleted and u.domain not in w.down and len(u.devices) < MAX_DEVICES
            ]
        )
        await w.add_device(u)
        for gid in self.usable_groups():
            in_group = [d for d in self.actors(gid) if d.user is u]
            if not in_group:
                continue
            roles = await self.roles(gid)
            # Inviting our own user adds every client of ours not in the roster, also one
            # removed while away (see re_add_stale_member).
            if roles.get(u.user_id) == "admin" and not self.stale(u, gid):
                await w.sync(in_group[0])
                if in_group[0].holds(gid):
                    in_group[0].events.append(await in_group[0].groups.invite(gid, [u.user_id]))

    async def own_devices_by_member(self) -> None:
        """A member (admin or not) brings its user's clients that are not in a group into it
        (``Groups.add_own_devices``; no admin needed)."""
        w = self.world
        gid = self.pick(self.usable_groups())
        roster = {d.client_id for d in w.members(gid)}

        def missing(u: User) -> bool:
            return any(x.client_id not in roster and w.online(x) for x in u.devices)

        d = self.pick(
            [d for d in self.actors(gid) if missing(d.user) and not self.stale(d.user, gid)]
        )
        roles = await self.roles(gid)
        await w.sync(d)
        if not d.holds(gid):
            return
        for ev in await d.groups.add_own_devices(gid):
            d.events.append(ev)
            w.own_adds.append((gid, ev.epoch, ev.added))
            admin = roles.get(d.user.user_id) == "admin"
            w.faults[f"own_devices_added_by_{'admin' if admin else 'member'}"] += len(ev.added)

    async def display_name(self) -> None:
        w = self.world
        u = self.pick([u for u in w.users if not u.deleted and u.domain not in w.down])
        await u.devices[0].client.set_display_name(f"{u.user_id.partition('@')[0]} {self.done}")

    async def delete_account(self, *, last_admin: bool = False) -> None:
        """One user deletes its account (once a run, past the first third); the homeserver
        proposes its removal and the other members' apps commit it."""
        w = self.world
        if self.deleted_account or self.done < self.ops // 3:
            raise Skip
        candidates = []
        sole_in: dict[str, list[bytes]] = {}  # user -> groups it is the only admin of
        for u in w.users:
            if u.deleted or u.domain in w.down or len(w.users) - self._deleted() <= 4:
                continue
            sole = False
            for gid in [g for g in w.groups if u in w.member_users(g)]:
                if gid not in self.usable_groups():
                    break  # its roles cannot be asked now: not a candidate
                roles = await self.roles(gid)
                admins = {x for x in w.member_users(gid) if roles.get(x.user_id) == "admin"}
                if admins == {u}:
                    sole = True
                    sole_in.setdefault(u.user_id, []).append(gid)
            else:
                if sole == last_admin:
                    candidates.append(u)
        u = self.pick(candidates)
        groups = [g for g in w.groups if u in w.member_users(g)]
        await w.stop_listener(u)
        await u.devices[0].client.delete_account()
        u.deleted = True
        self.deleted_account = True
        w.faults["account_deleted"] += 1
        if last_admin:
            w.admin_gone += sole_in.get(u.user_id, [])
            w.faults["last_admin_deleted_account"] += 1
        gone = {d.client_id for d in u.devices}
        for gid in groups:
            await self.wait_removed(gid, gone)

    def _deleted(self) -> int:
        return sum(u.deleted for u in self.world.users)

    async def wait_removed(self, gid: bytes, gone: set[str], timeout: float = 60.0) -> None:
        """Members sync (committing the homeserver's Removes) until ``gone`` left the group."""
        w = self.world
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            actors = self.actors(gid)
            if not actors or gid.rpartition(b"@")[2].decode() in w.down:
                return
            d = self.pick(actors)
            await w.sync(d)
            if d.holds(gid) and not gone & set(w.roster_now(d, gid)):
                return
        w.note(f"group {gid!r}: removal of {sorted(gone)} not committed within {timeout}s")

    async def last_admin_goes(self) -> None:
        if self.rng.random() < 0.5:
            await self.leave(last_admin=True)
        else:
            await self.delete_account(last_admin=True)

    # ---- faults --------------------------------------------------------------------------------
    async def stop_server(self) -> None:
        w = self.world
        if w.faults["server_stopped"] >= MAX_STOPS or w.down:
            raise Skip
        domain = self.pick(sorted(w.fed.domains))
        w.stop_server(domain)
        w.faults["server_stopped"] += 1
        back = self.done + self.rng.randint(*DOWN_FOR)

        async def start() -> None:
            w.start_server(domain)

        self.scheduled.append((back, f"start {domain}", start))

    async def kill_server(self) -> None:
        w = self.world
        if w.faults["server_killed"] >= MAX_KILLS or w.down:
            raise Skip
        domain = self.pick(sorted(w.fed.domains))
        w.kill_server(domain)
        w.faults["server_killed"] += 1
        # Back at once on the same data; the peers' outboxes retry on their own timers.
        w.start_server(domain, retry=False)

    async def federation_block(self) -> None:
        w = self.world
        if w.faults["federation_blocked"] >= MAX_BLOCKS or any(
            "unblock" in s[1] for s in self.scheduled
        ):
            raise Skip
        domain = self.pick(sorted(d for d in w.fed.domains if d not in w.down))
        peer = self.pick(sorted(d for d in w.fed.domains if d != domain))
        w.fed.policy(domain, "open", block=[peer])
        w.faults["federation_blocked"] += 1
        w.fed.wait_policy()

        async def unblock() -> None:
            if domain not in w.down:
                # What the block held back (sent once it is lifted; checks: outboxes drain).
                row = w.fed[domain].outbox_to(peer) or {}
                w.faults["federation_items_held"] += int(row.get("depth") or 0)
                if row.get("blocked") or row.get("state") == "blocked":
                    w.faults["federation_outbox_blocked"] += 1
            w.fed.policy(domain, "open")
            w.fed.wait_policy()
            w.retry_all()

        self.scheduled.append(
            (self.done + self.rng.randint(*BLOCK_FOR), f"unblock {domain}->{peer}", unblock)
        )

    async def corrupt_membership_tag(self) -> None:
        """A member posts its own self-update commit with one byte of the PublicMessage's
        membership_tag flipped (the DS cannot check it; the other members cannot process it
        and must resync)."""
        gid = self.pick(self.usable_groups())
        d = self.pick(self.actors(gid))
        await self.world.sync(d)
        if not d.holds(gid):
            return
        async with d.groups.store.lock:
            group = d.groups.group(gid)
            out = group.commit(force_path=True)
            commit = bytearray(out.commit)
            commit[-1] ^= 0x01  # the last byte of a member PublicMessage is its membership_tag
            body = encode_commit_bundle(bytes(commit), out.group_info, out.welcome)
            try:
                await d.client.request(
                    "POST",
                    f"/v1/groups/{group_path(gid)}/commits",
                    content=body,
                    content_type=MLS_MEDIA_TYPE,
                )
            except RoostError:
                group.clear_pending_commit()
                raise
            group.merge_pending_commit()
            d.groups.store.keep(group)
        self.world.corrupted.append((gid, group.epoch, d.client_id))
        self.world.faults["membership_tag_corrupted"] += 1

    async def commit_without_sync(self) -> None:
        """A member self-updates without syncing first (``Groups.update`` catches up itself)."""
        gid = self.pick(self.usable_groups())
        d = self.pick(self.actors(gid))
        d.events.append(await d.groups.update(gid))

    async def re_add_stale_member(self) -> None:
        """An admin adds back a user one of whose clients was removed while away."""
        await self.add(stale=True)

    async def welcome_without_tree(self) -> None:
        """An admin adds a user with a Welcome that leaves the ratchet tree out: the joiners
        fetch it from the DS."""
        await self.add(tree_in_welcome=False)

    # ---- the start -----------------------------------------------------------------------------
    async def seed_groups(self) -> None:
        """One group per domain, made by a user of it, with three users of the others."""
        w = self.world
        for domain in sorted(w.fed.domains):
            creator = next(u for u in w.users if u.domain == domain).devices[0]
            group = await creator.groups.create()
            w.groups.append(group.group_id)
            creator.events.append(joined_by_creating(group.group_id, creator.client_id))
            others = [u for u in w.users if u.domain != domain]
            for u in self.rng.sample(others, 3):
                creator.events.append(await creator.groups.invite(group.group_id, [u.user_id]))
        for d in w.devices:
            await w.sync(d)
        w.observe()
