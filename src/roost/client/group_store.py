"""Where a client's group states live: MLS group states saved in the home
(``groups/<id>.mls``) and loaded under the client's credential policy; for ``Groups``, the
states in use, which of them received items not saved yet, the group queues and their cursors
(``group_client.json``: one queue per membership), the keys of sealed groups (``group_key``)
and the history of what happened."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roost.protocol.base64url import b64u, unb64u

from .credential_policy import CredentialChecks
from .errors import RoostError, StateError
from .group_events import GroupEvent
from .group_key import key_headers
from .history import History, HistoryEntry
from .models import GroupQueue
from .state import _write_private

if TYPE_CHECKING:
    from roost.mls.group import Group

_GROUP_CLIENT_FILE = "group_client.json"


class GroupStates(CredentialChecks):
    """Saving and loading one client's MLS group states in its home."""

    def save_group(self, group: Group) -> None:
        if self.home is not None:
            self.home.save_group(group.group_id, group.to_bytes())

    def load_group(self, group_id: bytes) -> Group:
        from roost.mls.group import Group

        if self.home is None:
            raise StateError("no home directory: groups are not persisted")
        return Group.from_bytes(
            self.home.load_group(group_id), credential_policy=self.credential_policy()
        )


@dataclass(slots=True)
class Cursors:
    """This client's group-message queues (id and key; one per group membership, so that a
    stored queue holds the items of one group only) and how far it has processed each of them
    and the direct queue.

    ``queue``/``queue_after``: the one queue a home from before shared among all its groups
    (None in a newer home). The groups registered on it stay there; every newer membership
    gets a queue of its own, and the shared queue is deleted once no held group uses it."""

    queue: GroupQueue | None = None
    queue_after: int = 0
    direct_after: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # Connections this user requested, unanswered: connection id -> the group built for it.
    requested: dict[str, bytes] = field(default_factory=dict)
    # Requests received, unanswered: connection id -> (requester, the Welcome the request
    # carries), kept so that accepting works after the event was acked.
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    # The group key wraps those requests' events carried (``group_key``), by connection id.
    received_wraps: dict[str, str] = field(default_factory=dict, repr=False)
    # For each group we hold: the group_seq our state has reached (the Welcome we joined from,
    # then each item processed), so that an older Welcome never replaces it.
    group_seqs: dict[bytes, int] = field(default_factory=dict)
    # Groups we asked to leave, by the group_seq of our leave proposal: their states are kept
    # (hidden from the caller) to read what was sent before the leave, until the DS hands our
    # proposal back as the last item for us.
    leaving: dict[bytes, int] = field(default_factory=dict)
    # Each membership's own queue and the last seq processed in it, by group.
    group_queues: dict[bytes, GroupQueue] = field(default_factory=dict)
    group_after: dict[bytes, int] = field(default_factory=dict)
    # Queues of memberships that ended, to delete (kept until the server confirms).
    retired: dict[str, GroupQueue] = field(default_factory=dict)
    # Queues made for a join not done yet, by group: a retry registers the same one (a
    # registration whose answer was lost may have filled it already).
    joining: dict[bytes, GroupQueue] = field(default_factory=dict)
    # Each sealed group's key (``group_key``), by group: presented with every request on the
    # group; a group without one is a legacy group. Out of reprs: it is a secret.
    group_keys: dict[bytes, bytes] = field(default_factory=dict, repr=False)

    @property
    def queue_id(self) -> str:
        return self.queue.id if self.queue is not None else ""

    def queue_of(self, group_id: bytes) -> GroupQueue | None:
        """The queue that brings a group's items: its own, else the shared one of an old home."""
        return self.group_queues.get(group_id, self.queue)

    def after(self, group_id: bytes | None) -> int:
        """The last seq processed in a group's own queue (None: the shared queue)."""
        if group_id is None:
            return self.queue_after
        return self.group_after.get(group_id, 0)

    def advance(self, group_id: bytes | None, seq: int) -> None:
        if group_id is None:
            self.queue_after = seq
        elif group_id in self.group_queues:
            self.group_after[group_id] = seq

    def group_of_queue(self, queue_id: str) -> bytes | None:
        """The group whose own queue this is (None: none, or the shared queue)."""
        for gid, q in self.group_queues.items():
            if q.id == queue_id:
                return gid
        return None

    def all_queues(self) -> dict[str, tuple[GroupQueue, int]]:
        """Every queue that brings items (the shared one too), by id, with its position."""
        out = {q.id: (q, self.group_after.get(g, 0)) for g, q in self.group_queues.items()}
        if self.queue is not None:
            out[self.queue.id] = (self.queue, self.queue_after)
        return out


class GroupStore:
    """The group states one ``Groups`` works on, its queue cursors and its history. ``lock``
    serialises every operation on them (one MLS state must never be used by two at once)."""

    def __init__(self, client: GroupStates, history: History | None = None) -> None:
        self.client = client
        home = client.home
        self.history = history or History.in_home(home.path if home is not None else None)
        self.lock = asyncio.Lock()
        # Serialises reading the direct queue (Welcomes), so that ``sync`` and ``listen`` on
        # the same store never join one Welcome twice. Taken before ``lock``, never inside it.
        self.direct_lock = asyncio.Lock()
        self.groups: dict[bytes, Group] = {}
        self.dirty: set[bytes] = set()  # groups changed by received items, not yet saved
        self.cursors = self._load_cursors()

    # ---- cursors ----------------------------------------------------------------------------
    def _cursor_path(self) -> Path | None:
        home = self.client.home
        return None if home is None else home.path / _GROUP_CLIENT_FILE

    def _load_cursors(self) -> Cursors:
        path = self._cursor_path()
        if path is None or not path.exists():
            return Cursors()
        try:
            d = json.loads(path.read_text())
            # Files from before queue keys hold an id without a key: ``GroupSync`` claims one.
            qid = str(d.get("queue_id", ""))
            queue = GroupQueue(qid, str(d.get("queue_key", ""))) if qid else None
            return Cursors(
                queue,
                int(d.get("queue_after", 0)),
                int(d.get("direct_after", 0)),
                requested={str(k): unb64u(v) for k, v in d.get("requested", {}).items()},
                received={
                    str(k): (str(v[0]), unb64u(v[1])) for k, v in d.get("received", {}).items()
                },
                received_wraps={str(k): str(v) for k, v in d.get("received_wraps", {}).items()},
                group_seqs={unb64u(k): int(v) for k, v in d.get("group_seqs", {}).items()},
                leaving={unb64u(k): int(v) for k, v in d.get("leaving", {}).items()},
                group_queues={
                    unb64u(k): GroupQueue(str(v["id"]), str(v["key"]))
                    for k, v in d.get("group_queues", {}).items()
                },
                group_after={
                    unb64u(k): int(v.get("after", 0)) for k, v in d.get("group_queues", {}).items()
                },
                retired={
                    str(k): GroupQueue(str(k), str(v)) for k, v in d.get("retired", {}).items()
                },
                joining={
                    unb64u(k): GroupQueue(str(v["id"]), str(v["key"]))
                    for k, v in d.get("joining", {}).items()
                },
                group_keys={unb64u(k): unb64u(str(v)) for k, v in d.get("group_keys", {}).items()},
            )
        except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
            raise StateError(f"unreadable {path}: {e}") from e

    def saved_queue(self) -> GroupQueue | None:
        """The group queue as the home holds it now (another process may have saved it)."""
        return self._load_cursors().queue

    def save_cursors(self) -> None:
        path = self._cursor_path()
        if path is None:
            return
        assert self.client.home is not None
        self.client.home.ensure_dir()
        c = self.cursors
        data = {
            "queue_id": c.queue_id,
            "queue_key": c.queue.key if c.queue is not None else "",
            "queue_after": c.queue_after,
            "direct_after": c.direct_after,
            "requested": {k: b64u(v) for k, v in sorted(c.requested.items())},
            "received": {k: [u, b64u(w)] for k, (u, w) in sorted(c.received.items())},
            "received_wraps": dict(sorted(c.received_wraps.items())),
            "group_seqs": {b64u(k): v for k, v in sorted(c.group_seqs.items())},
            "leaving": {b64u(k): v for k, v in sorted(c.leaving.items())},
            "group_queues": {
                b64u(g): {"id": q.id, "key": q.key, "after": c.group_after.get(g, 0)}
                for g, q in sorted(c.group_queues.items())
            },
            "retired": {q.id: q.key for q in c.retired.values()},
            "joining": {b64u(g): {"id": q.id, "key": q.key} for g, q in sorted(c.joining.items())},
            "group_keys": {b64u(g): b64u(k) for g, k in sorted(c.group_keys.items())},
        }
        _write_private(path, json.dumps(data).encode())

    # ---- group keys -------------------------------------------------------------------------
    def group_key(self, group_id: bytes) -> bytes | None:
        """The key of a sealed group we are in (None: a legacy group, or not ours)."""
        return self.cursors.group_keys.get(group_id)

    def key_headers(self, group_id: bytes) -> dict[str, str]:
        """The header every request on the group carries: its key, when it has one."""
        return key_headers(self.cursors.group_keys.get(group_id))

    def set_group_key(self, group_id: bytes, key: bytes | None) -> None:
        """Keep a group's key (saved with the cursors). None keeps the one held: a group's key
        never changes, and a Welcome without one only means its committer did not pass it."""
        if key is not None:
            self.cursors.group_keys[group_id] = key

    # ---- group states -----------------------------------------------------------------------
    def group(self, group_id: bytes) -> Group:
        """The local MLS state of a group we are in (loaded from the home on first use)."""
        g = self.groups.get(group_id)
        if g is None:
            try:
                g = self.client.load_group(group_id)
            except StateError as e:
                raise RoostError(0, "unknown_group", f"not in group {group_id!r}") from e
            self.groups[group_id] = g
        return g

    def local_group_ids(self) -> list[bytes]:
        ids = set(self.groups)
        if self.client.home is not None:
            ids.update(self.client.home.group_ids())
        return sorted(ids)

    def holds(self, group_id: bytes) -> bool:
        return group_id in self.groups or group_id in self.local_group_ids()

    def keep(self, group: Group) -> None:
        """Save a state now (after our own operations: before anything leaves). A group we
        were leaving is ours again: no operation runs on its hidden state, so this is a
        (re)join."""
        self.cursors.leaving.pop(group.group_id, None)
        self.groups[group.group_id] = group
        self.dirty.discard(group.group_id)
        self.client.save_group(group)

    def touch(self, group: Group) -> None:
        """A received item changed this state: saved by the next ``flush`` (one write per
        group per batch, not per message)."""
        self.groups[group.group_id] = group
        self.dirty.add(group.group_id)

    def flush(self) -> None:
        """Save the touched states, then the cursors (so a crash never skips an item)."""
        for gid in sorted(self.dirty):
            group = self.groups.get(gid)
            if group is not None:
                self.client.save_group(group)
        self.dirty.clear()
        self.save_cursors()

    def reached(self, group_id: bytes, group_seq: int) -> None:
        """Our state of the group has reached ``group_seq`` (saved with the cursors)."""
        seqs = self.cursors.group_seqs
        seqs[group_id] = max(seqs.get(group_id, 0), group_seq)

    def leaving(self, group_id: bytes) -> bool:
        return group_id in self.cursors.leaving

    def left_at(self, group_id: bytes) -> int | None:
        """The group_seq of our pending leave proposal for the group, if any."""
        return self.cursors.leaving.get(group_id)

    def mark_leaving(self, group_id: bytes, group_seq: int) -> None:
        """We proposed to leave (saved at once): the state stays, hidden, until the proposal at
        ``group_seq`` comes back or we join again (``keep``)."""
        self.cursors.leaving[group_id] = group_seq
        self.save_cursors()

    def set_queue(self, group_id: bytes, queue: GroupQueue) -> None:
        """The membership's queue from now on, read from its start. A queue the group had
        before (an earlier membership's) is retired: deleted once the caller has a moment."""
        c = self.cursors
        old = c.group_queues.get(group_id)
        c.retired.pop(queue.id, None)
        if old is not None and old.id == queue.id:
            return  # kept (a resync): read on from where we are
        if old is not None:
            c.retired[old.id] = old
        c.group_queues[group_id] = queue
        c.group_after[group_id] = 0

    def forget(self, group_id: bytes) -> None:
        """The membership ended (left, removed, deleted): its state goes and its queue is
        retired (deleted by ``GroupSync`` after the batch that ended it, outside the lock)."""
        queue = self.cursors.group_queues.pop(group_id, None)
        self.cursors.group_after.pop(group_id, None)
        if queue is not None:
            self.cursors.retired[queue.id] = queue
        self.cursors.group_seqs.pop(group_id, None)
        self.cursors.leaving.pop(group_id, None)
        self.cursors.group_keys.pop(group_id, None)
        self.dirty.discard(group_id)
        self.groups.pop(group_id, None)
        home = self.client.home
        if home is not None:
            home._group_path(group_id).unlink(missing_ok=True)

    # ---- history ----------------------------------------------------------------------------
    def record(self, event: GroupEvent, *, outgoing: bool = False) -> GroupEvent:
        """Keep the event in the history (proposals and rejected items are not part of the
        conversation) and return it."""
        text = event.message if event.kind == "message" else event.text
        kind = {"message": "message", "notice": "notice"}.get(event.kind, "commit")
        if event.kind in ("proposal", "rejected"):
            return event
        self.history.append(
            event.group_id,
            HistoryEntry(kind, event.sender, text, event.epoch, event.group_seq, outgoing),
        )
        return event
