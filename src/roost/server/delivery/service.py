"""Delivery Service: groups, commits (one per epoch), ordered fan-out, roles, server notices.

Every group is followed by a ``GroupObserver`` whose state lives in ``ds_groups.state``: a
handshake is applied to a freshly loaded observer outside the write transaction (CPU work), and
the result is stored by a *conditional* update — on the epoch for commits (first commit of an
epoch wins, atomically, on both engines), on ``rev`` for proposals (lost updates retried). The
same update bumps ``last_seq``, the group-wide order shared by every item the group fans out,
and the fan-out rows are written in that transaction, so order, state and delivery commit
together or not at all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from cryptography import x509
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.mls.constants import (
    ContentType,
    CredentialType,
    ExtensionType,
    SenderType,
    WireFormat,
)
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES, get_cipher_suite
from roost.mls.errors import DecodeError, MLSError, UnsupportedError, ValidationError
from roost.mls.extension_types import ExternalSenders
from roost.mls.extensions import find_extension
from roost.mls.framing import MLSMessage
from roost.mls.group import GroupObserver
from roost.mls.group.external import external_remove
from roost.mls.group.proposal_rules import QueuedProposal
from roost.mls.group.state import resolve_proposals
from roost.mls.proposals import Add, GroupContextExtensions, ReInit, Remove

from ..auth.ca import client_id_of_certificate, verify_client_certificate
from ..auth.service import AuthService, Principal
from ..config import Config
from ..connections.service import ConnectionService
from ..encoding import b64u
from ..errors import Problem
from ..queues.service import QueueService
from ..store import Database
from ..store.counters import reserve_ranges
from ..store.pg_driver import pg_driver
from . import wire
from .keys import ServerKey, ServerKeys
from .tables import ds_groups, ds_held, ds_members, ds_roles, ds_sends

# pg_advisory_lock key of the account-events consumer (any fixed 64-bit value of our own).
ACCOUNT_EVENTS_LOCK_KEY = 0x526F6F7374414501

log = logging.getLogger("roost.server.delivery")

ADMIN = "admin"
MEMBER = "member"
ROLES = (ADMIN, MEMBER)
# Application messages of the current epoch or this many before it are accepted: members keep
# one epoch of grace for messages sent while a commit was in flight.
APP_EPOCH_WINDOW = 1
SEND_ID_RETENTION = 24 * 3600
MEMBER_CACHE_SIZE = 10_000
PRUNE_INTERVAL = 300.0
PROPOSAL_RETRIES = 8
SEND_BATCH_MAX = 256  # sends written in one transaction at most
_GROUP_ID_RE = re.compile(rb"^[A-Za-z0-9_-]{22}@([a-z0-9.-]{1,253}(?::[0-9]{1,5})?)$")
# A remote domain's AS certificate is re-read (through the federation directory's own cache)
# at most this often for the synchronous credential policy.
REMOTE_AS_TTL = 600.0
MAX_NEW_DOMAINS_PER_COMMIT = 8  # other domains' AS certificates loaded for one commit


@dataclass(frozen=True, slots=True)
class RemotePrincipal(Principal):
    """A client of another domain acting through its home server (federation/routes_ds.py):
    its queues live on ``domain``'s QS, which checked their ownership."""

    domain: str


class DsFederation(Protocol):
    """What the DS needs from federation (federation/ds_flows.py) for remote members."""

    async def as_certificate(self, domain: str) -> bytes: ...

    # Inside the caller's transaction: items for remote queues, in order, per destination.
    def items_in(
        self, conn: AsyncConnection, domain: str, items: list[tuple[bytes, bytes]]
    ) -> Awaitable[None]: ...

    def welcome_in(
        self, conn: AsyncConnection, domain: str, user_id: str, event: bytes
    ) -> Awaitable[None]: ...

    # Before a transaction's first item: lock its destinations in one order (no deadlock).
    def lock_destinations_in(self, conn: AsyncConnection, domains: set[str]) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class Member:
    leaf_index: int
    client_uuid: str
    user_id: str
    queue_id: bytes | None
    policy: str | None
    gone: bool
    queue_domain: str | None = None  # None: the queue is on this server's QS


@dataclass(frozen=True, slots=True)
class GroupView:
    group_id: bytes
    cipher_suite: int
    epoch: int
    group_seq: int
    external_join: bool
    roles: dict[str, str]
    my_leaf: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "group_id": b64u(self.group_id),
            "cipher_suite": self.cipher_suite,
            "epoch": self.epoch,
            "group_seq": self.group_seq,
            "external_join": self.external_join,
            "roles": self.roles,
            "my_leaf": self.my_leaf,
        }


def _domain_of(user_id: str) -> str:
    return user_id.rpartition("@")[2]


def _mls_problem(code: str, e: Exception) -> Problem:
    return Problem(422, code, f"{type(e).__name__}: {e}")


class _ClientCache:
    """Bounded map leaf certificate -> (client id, key): X.509 checks are the costly part."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._map: OrderedDict[bytes, tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()  # used from the observer threads too

    def get(self, cert: bytes) -> tuple[str, bytes] | None:
        with self._lock:
            hit = self._map.get(cert)
            if hit is not None:
                self._map.move_to_end(cert)
            return hit

    def put(self, cert: bytes, value: tuple[str, bytes]) -> None:
        with self._lock:
            self._map[cert] = value
            if len(self._map) > self.size:
                self._map.popitem(last=False)


# The send's bookkeeping on PostgreSQL in one round trip: the next group_seq (locking the group
# row) and the idempotency record. No row back: a duplicate message id (or no such group).
# Run on the driver connection (``store/pg_driver.py``; SQLAlchemy's execution path cost more
# CPU than the statement): $1 group id, $2 sending client uuid, $3 message id, $4 created_at.
_SEND_PG = """
    WITH g AS (
        UPDATE ds_groups SET last_seq = last_seq + 1 WHERE id = $1::bytea
        RETURNING last_seq, epoch, rev
    ), s AS (
        INSERT INTO ds_sends (group_id, client_uuid, message_id, group_seq, created_at)
        SELECT $1::bytea, $2::text, $3::text, g.last_seq, $4::bigint FROM g
        ON CONFLICT DO NOTHING
        RETURNING group_seq
    )
    SELECT s.group_seq, g.epoch, g.rev FROM s, g
"""


# A batch of sends to any groups (group commit) in one round trip: the group rows locked in id
# order ($5: the distinct group ids, sorted), each group's last_seq bumped by its count of sends
# (the k-th send of a group in the batch gets its k-th new seq), and the idempotency records.
# One row per send, in batch order, with its group's epoch and rev; ``stored`` counts the
# records written: fewer than the sends means a duplicate message id, fewer rows a missing
# group (either way the batch is rolled back and written send by send).
_SEND_BATCH_PG = """
    WITH m AS (
        SELECT gid, cu, mid, k
        FROM unnest($1::bytea[], $2::text[], $3::text[]) WITH ORDINALITY AS m(gid, cu, mid, k)
    ), n AS (
        SELECT gid, count(*) AS c FROM m GROUP BY gid
    ), locked AS (
        SELECT id FROM ds_groups WHERE id = ANY($5::bytea[]) ORDER BY id FOR UPDATE
    ), g AS (
        UPDATE ds_groups SET last_seq = ds_groups.last_seq + n.c
        FROM locked JOIN n ON n.gid = locked.id
        WHERE ds_groups.id = locked.id
        RETURNING ds_groups.id, ds_groups.last_seq - n.c AS base, ds_groups.epoch, ds_groups.rev
    ), q AS (
        SELECT m.k, m.gid, m.cu, m.mid, g.epoch, g.rev,
               g.base + row_number() OVER (PARTITION BY m.gid ORDER BY m.k) AS seq
        FROM m JOIN g ON g.id = m.gid
    ), s AS (
        INSERT INTO ds_sends (group_id, client_uuid, message_id, group_seq, created_at)
        SELECT gid, cu, mid, seq, $4::bigint FROM q
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT q.seq, q.epoch, q.rev, (SELECT count(*) FROM s) AS stored FROM q ORDER BY q.k
"""


# Observer work (decode state, validate, encode) runs here so the event loop keeps serving
# sends and socket timers while a big commit is checked.
_CPU = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ds-observer")


@dataclass(slots=True)
class _StagedCommit:
    observer: GroupObserver
    observed: object
    committer_leaf: int | None
    committer_user: str
    new_rows: dict[int, tuple[str, str]]
    removed: set[int]
    check_senders: bool
    state: bytes


@dataclass(slots=True)
class _PendingSend:
    """A send waiting for its group's next group-committed transaction."""

    p: Principal
    group_id: bytes
    message_id: str
    header: wire.AppHeader
    body: bytes
    done: asyncio.Future[int]


class _Duplicate(Exception):
    """A send whose message id was already stored: roll back, answer with the stored seq."""


def _insert(conn: AsyncConnection, table: sa.Table):  # type: ignore[no-untyped-def]
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


class DeliveryService:
    def __init__(
        self,
        db: Database,
        config: Config,
        auth: AuthService,
        queues: QueueService,
        connections: ConnectionService,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.config = config
        self.domain = config.home_domain
        self.auth = auth
        self.queues = queues
        self.connections = connections
        self.clock = clock
        self.keys = ServerKeys(db, lambda: auth.ca, clock)  # type: ignore[arg-type, return-value]
        self._clients = _ClientCache()
        self._member_cache: OrderedDict[bytes, tuple[int, list[Member]]] = OrderedDict()
        self._events_wake = asyncio.Event()
        # One consumer of the account-event outbox at a time (the background task, tests).
        self._events_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_prune = 0.0
        # Group commit of sends (both engines): the sends waiting for the next write, and the
        # one task writing them.
        self._send_waiting: list[_PendingSend] = []
        self._send_writer: asyncio.Task[None] | None = None
        self._epoch_seen: dict[bytes, int] = {}  # group -> epoch at its last batched send
        # Set when federation runs (federation/ds_flows.py): remote members and credentials.
        self.federation: DsFederation | None = None
        self._remote_as: dict[str, tuple[bytes, float]] = {}
        self._missing_as: set[str] = set()

    def now(self) -> int:
        return int(self.clock())

    # ---- identities ---------------------------------------------------------------------------

    def check_group_id(self, group_id: bytes) -> None:
        m = _GROUP_ID_RE.match(group_id)
        if m is None or m.group(1).decode() != self.domain:
            raise Problem(
                422,
                "invalid_group_id",
                f"a group id is '<22 chars of base64url>@{self.domain}' (ASCII)",
            )

    def client_of(self, credential: Credential, signature_key: bytes) -> tuple[str, str]:
        """(client uuid, user id) of a leaf credential issued by this AS; raises Problem."""
        if credential.credential_type != CredentialType.X509 or not credential.certificates:
            raise Problem(422, "credential_mismatch", "leaves need the AS-issued x509 credential")
        leaf = credential.certificates[0]
        hit = self._clients.get(leaf)
        if hit is None:
            try:
                hit = verify_client_certificate(leaf, self._issuer_for(leaf))
            except ValueError as e:
                raise Problem(422, "credential_mismatch", str(e)) from None
            self._clients.put(leaf, hit)
        client_id, key = hit
        if key != signature_key:
            raise Problem(422, "credential_mismatch", "credential key differs from the leaf key")
        user_id, _, client_uuid = client_id.rpartition("/")
        return client_uuid, user_id

    def _issuer_for(self, leaf_der: bytes) -> bytes:
        """The AS certificate that must have issued ``leaf_der``: the one of the domain its
        client id names (ours, or a prefetched remote one; a missing one is noted for
        ``_prefetch_missing`` and the leaf refused for now)."""
        try:
            client_id = client_id_of_certificate(x509.load_der_x509_certificate(leaf_der))
        except ValueError:
            client_id = None
        domain = (client_id or "").partition("/")[0].rpartition("@")[2]
        if not domain or domain == self.domain or self.federation is None:
            return self.auth.ca.certificate_der  # type: ignore[union-attr]
        hit = self._remote_as.get(domain)
        if hit is None or self.clock() - hit[1] > REMOTE_AS_TTL:
            self._missing_as.add(domain)
            if hit is None:
                raise ValueError(f"the AS certificate of {domain} is not available")
        return hit[0]

    async def _prefetch_as(self, domains: Iterable[str]) -> None:
        """Load remote AS certificates before the (synchronous) credential policy runs."""
        if self.federation is None:
            return
        for domain in set(domains) - {self.domain, ""}:
            hit = self._remote_as.get(domain)
            if hit is not None and self.clock() - hit[1] <= REMOTE_AS_TTL:
                continue
            try:
                der = await self.federation.as_certificate(domain)
            except Problem:
                continue  # refused or unreachable: its leaves are refused
            self._remote_as[domain] = (der, self.clock())
            if len(self._remote_as) > 4096:
                self._remote_as.pop(next(iter(self._remote_as)))

    async def _prefetch_missing(self) -> bool:
        """Fetch the AS certificates the policy found missing; True if any was fetched."""
        missing, self._missing_as = self._missing_as, set()
        before = {d: self._remote_as.get(d) for d in missing}
        await self._prefetch_as(missing)
        return any(self._remote_as.get(d) != before[d] for d in missing)

    def _policy(self, credential: Credential, signature_key: bytes) -> bool:
        """Observer credential policy: every new or changed leaf carries our AS's credential."""
        try:
            self.client_of(credential, signature_key)
        except Problem as p:
            raise ValidationError(p.detail) from None
        return True

    def _observer(self, state: bytes) -> GroupObserver:
        return GroupObserver.from_bytes(state, credential_policy=self._policy)

    async def external_sender(self, cipher_suite: int) -> ServerKey:
        try:
            return await self.keys.get(cipher_suite)
        except UnsupportedError:
            raise Problem(422, "unsupported_cipher_suite", "cipher suite not supported") from None

    async def _sender_index(self, obs: GroupObserver) -> tuple[ServerKey, int] | None:
        key = await self.external_sender(obs.group_context.cipher_suite)
        ext = find_extension(obs.group_context.extensions, ExtensionType.EXTERNAL_SENDERS)
        if ext is None:
            return None
        try:
            senders = ExternalSenders.from_extension(ext).senders
        except DecodeError:
            return None
        for i, s in enumerate(senders):
            if s.signature_key == key.public_key:
                return key, i
        return None

    async def _require_external_sender(self, obs: GroupObserver) -> tuple[ServerKey, int]:
        found = await self._sender_index(obs)
        if found is None:
            raise Problem(
                422,
                "missing_external_sender",
                "the group's external_senders extension must list the homeserver "
                "(GET /v1/ds/external-sender)",
            )
        return found

    # ---- loading --------------------------------------------------------------------------------

    async def _group(self, conn: AsyncConnection, group_id: bytes) -> sa.Row:
        row = (await conn.execute(sa.select(ds_groups).where(ds_groups.c.id == group_id))).first()
        if row is None:
            raise Problem(404, "group_not_found", "no such group")
        return row

    async def _members(self, conn: AsyncConnection, group_id: bytes) -> list[Member]:
        rows = await conn.execute(
            sa.select(
                ds_members.c.leaf_index,
                ds_members.c.client_uuid,
                ds_members.c.user_id,
                ds_members.c.queue_id,
                ds_members.c.policy,
                ds_members.c.gone,
                ds_members.c.queue_domain,
            ).where(ds_members.c.group_id == group_id)
        )
        return [Member(*r) for r in rows]

    async def _roles(self, conn: AsyncConnection, group_id: bytes) -> dict[str, str]:
        rows = await conn.execute(
            sa.select(ds_roles.c.user_id, ds_roles.c.role).where(ds_roles.c.group_id == group_id)
        )
        return {r.user_id: r.role for r in rows}

    async def _snapshot(self, group_id: bytes) -> tuple[sa.Row, list[Member], dict[str, str]]:
        """The group row with its members and roles as of the same ``rev``. Read without a lock,
        so a commit landing between the reads would pair one epoch's row with the next epoch's
        members (a valid commit then refused as a role violation instead of a conflict). Every
        change to members or roles bumps ``rev`` in its transaction: re-read until it holds."""
        async with self.db.engine.connect() as conn:
            for _ in range(PROPOSAL_RETRIES):
                row = await self._group(conn, group_id)
                members = await self._members(conn, group_id)
                roles = await self._roles(conn, group_id)
                rev = await conn.scalar(
                    sa.select(ds_groups.c.rev).where(ds_groups.c.id == group_id)
                )
                if rev == row.rev:
                    return row, members, roles
        raise Problem(409, "conflict", "the group changed concurrently; retry")

    def _my_leaf(self, members: Iterable[Member], client_uuid: str) -> Member | None:
        for m in members:
            if m.client_uuid == client_uuid and not m.gone:
                return m
        return None

    async def _view(self, conn: AsyncConnection, row: sa.Row, client_uuid: str | None) -> GroupView:
        members = await self._members(conn, row.id)
        mine = self._my_leaf(members, client_uuid) if client_uuid else None
        return GroupView(
            row.id,
            row.cipher_suite,
            row.epoch,
            row.last_seq,
            row.external_join,
            await self._roles(conn, row.id),
            mine.leaf_index if mine else None,
        )

    # ---- fan-out --------------------------------------------------------------------------------

    async def _fanout(
        self,
        conn: AsyncConnection,
        group_id: bytes,
        group_seq: int,
        item_type: int,
        body: bytes,
        members: Iterable[Member],
        exclude_leaf: int | None = None,
    ) -> None:
        """One item to every member but ``exclude_leaf``: one multi-row enqueue for registered
        queues; leaves without a queue yet (fresh joiners) get it held, in group order."""
        items: list[tuple[bytes, bytes]] = []
        remote: dict[str, list[tuple[bytes, bytes]]] = {}
        held: list[dict[str, object]] = []
        for m in members:
            if m.leaf_index == exclude_leaf or m.gone:
                continue
            if m.queue_id is None:
                held.append(
                    {
                        "group_id": group_id,
                        "leaf_index": m.leaf_index,
                        "group_seq": group_seq,
                        "item_type": item_type,
                        "body": body,
                    }
                )
            else:
                policy = m.policy.encode() if m.policy else b""
                item = wire.queue_item(group_id, group_seq, policy, item_type, body)
                if m.queue_domain is None:
                    items.append((m.queue_id, item))
                else:  # on the member's home QS, through the outbox (same transaction)
                    remote.setdefault(m.queue_domain, []).append((m.queue_id, item))
        if items:
            await self.queues.enqueue_many_in(conn, items)
        if held:
            await conn.execute(sa.insert(ds_held), held)
        if remote:
            await self._remote_items(conn, remote)

    async def _remote_items(
        self, conn: AsyncConnection, by_domain: dict[str, list[tuple[bytes, bytes]]]
    ) -> None:
        if self.federation is None:
            log.warning("items for remote members dropped: federation is not running")
            return
        for domain in sorted(by_domain):
            await self.federation.items_in(conn, domain, by_domain[domain])

    # ---- group creation -------------------------------------------------------------------------

    async def create_group(
        self, p: Principal, body: bytes, queue_id: bytes, external_join: bool
    ) -> GroupView:
        bundle = wire.decode_group_state(body)
        try:
            obs = GroupObserver.from_group_info(
                bundle.group_info, bundle.ratchet_tree, credential_policy=self._policy
            )
        except UnsupportedError as e:
            raise Problem(422, "unsupported_cipher_suite", str(e)) from None
        except MLSError as e:
            raise _mls_problem("invalid_group", e) from None
        group_id = obs.group_id
        self.check_group_id(group_id)
        if obs.group_context.cipher_suite not in SUPPORTED_SUITES:
            raise Problem(422, "unsupported_cipher_suite", "cipher suite not offered here")
        roster = obs.roster()
        if obs.epoch != 0 or len(roster) != 1:
            raise Problem(422, "invalid_group", "a new group is at epoch 0 with one member")
        leaf, credential, key = roster[0]
        client_uuid, user_id = self.client_of(credential, key)
        if client_uuid != p.client_uuid:
            raise Problem(422, "credential_mismatch", "the creator's leaf is not the caller")
        await self._require_external_sender(obs)
        async with self.db.transaction() as conn:
            await self.queues.check_owner(conn, queue_id, p.client_uuid)
            exists = (
                await conn.execute(sa.select(ds_groups.c.id).where(ds_groups.c.id == group_id))
            ).first()
            if exists is not None:
                raise Problem(409, "group_exists", "a group with this id exists")
            await conn.execute(
                sa.insert(ds_groups).values(
                    id=group_id,
                    cipher_suite=obs.group_context.cipher_suite,
                    epoch=0,
                    last_seq=0,
                    # A random start: a re-created group id never matches a cached member list.
                    rev=secrets.randbits(48),
                    external_join=external_join,
                    state=obs.to_bytes(),
                    group_info=bundle.group_info,
                    last_commit_hash=None,
                    last_commit_seq=0,
                    created_at=self.now(),
                )
            )
            await conn.execute(
                sa.insert(ds_members).values(
                    group_id=group_id,
                    leaf_index=leaf,
                    client_uuid=client_uuid,
                    user_id=user_id,
                    queue_id=queue_id,
                    policy=None,
                    gone=False,
                )
            )
            await conn.execute(
                sa.insert(ds_roles).values(group_id=group_id, user_id=user_id, role=ADMIN)
            )
            return GroupView(
                group_id,
                obs.group_context.cipher_suite,
                0,
                0,
                external_join,
                {user_id: ADMIN},
                leaf,
            )

    # ---- reads ----------------------------------------------------------------------------------

    async def list_groups(self, p: Principal) -> list[GroupView]:
        async with self.db.engine.connect() as conn:
            ids = [
                r.group_id
                for r in await conn.execute(
                    sa.select(ds_members.c.group_id)
                    .where(ds_members.c.client_uuid == p.client_uuid, ds_members.c.gone.is_(False))
                    .order_by(ds_members.c.group_id)
                )
            ]
            out = []
            for gid in ids:
                out.append(await self._view(conn, await self._group(conn, gid), p.client_uuid))
            return out

    async def get_group(self, p: Principal, group_id: bytes) -> GroupView:
        async with self.db.engine.connect() as conn:
            row = await self._group(conn, group_id)
            view = await self._view(conn, row, p.client_uuid)
        if view.my_leaf is None:
            raise Problem(403, "not_member", "the calling client holds no leaf in this group")
        return view

    async def group_state(self, p: Principal, group_id: bytes) -> bytes:
        """``RoostGroupState`` for members (fresh joiners included) or, if the group allows
        external joins, any authenticated client."""
        async with self.db.engine.connect() as conn:
            row = await self._group(conn, group_id)
            if not row.external_join:
                members = await self._members(conn, group_id)
                if self._my_leaf(members, p.client_uuid) is None:
                    raise Problem(403, "not_member", "not a member of this group")
        obs = self._observer(row.state)
        return wire.encode_group_state(row.group_info, obs.tree.to_bytes())

    # ---- commits --------------------------------------------------------------------------------

    def _stage_commit(
        self,
        p: Principal,
        row: sa.Row,
        members: list[Member],
        roles: dict[str, str],
        pm,  # type: ignore[no-untyped-def]
        bundle: wire.CommitBundle,
        queue_id: bytes | None,
    ) -> _StagedCommit:
        """The CPU part of a commit (observer, roles, roster diff), run off the event loop."""
        content = pm.content
        by_leaf = {m.leaf_index: m for m in members}
        obs = self._observer(row.state)
        sender = content.sender
        external = sender.sender_type == SenderType.NEW_MEMBER_COMMIT
        committer_leaf: int | None = None
        if external:
            if not row.external_join:
                raise Problem(403, "external_join_disabled", "this group does not allow joins")
            if queue_id is None:
                raise Problem(422, "queue_required", "an external commit registers a queue_id")
            committer_user = p.user_id
        elif sender.sender_type == SenderType.MEMBER:
            m = by_leaf.get(sender.index)  # type: ignore[arg-type]
            if m is None or m.gone or m.client_uuid != p.client_uuid:
                raise Problem(403, "not_member", "the commit's sender is not the calling client")
            committer_leaf = m.leaf_index
            committer_user = m.user_id
        else:
            raise Problem(422, "invalid_commit", "commits come from members or new members")
        try:
            proposals = resolve_proposals(content.content, sender, obs._proposals)  # noqa: SLF001
        except MLSError as e:
            raise _mls_problem("invalid_commit", e) from None
        adds = self._check_roles(proposals, by_leaf, roles, committer_user, p, external)
        try:
            observed = obs.apply(pm)
        except MLSError as e:
            raise _mls_problem("invalid_commit", e) from None
        try:
            # On failure this observer copy is simply not stored: commit and GroupInfo are
            # accepted together or not at all.
            obs.check_group_info(bundle.group_info)
        except MLSError as e:
            raise _mls_problem("invalid_group_info", e) from None
        if bundle.welcome is not None and MLSMessage.decode(bundle.welcome).wire_format != (
            WireFormat.WELCOME
        ):
            raise Problem(422, "wrong_wire_format", "the third message must be a Welcome")
        check_senders = any(isinstance(q.proposal.body, GroupContextExtensions) for q in proposals)
        if adds and bundle.welcome is None:
            raise Problem(422, "welcome_required", "a commit with Adds carries the Welcome")
        if not adds and bundle.welcome is not None:
            raise Problem(422, "unexpected_welcome", "a Welcome without Adds")
        # The new roster: removed leaves go, added leaves come (client from the credential).
        removed = set(observed.removed)
        new_rows: dict[int, tuple[str, str]] = {}
        for leaf, credential, key in obs.roster():
            old = by_leaf.get(leaf)
            if old is not None and leaf not in removed:
                cu, _ = self.client_of(credential, key)
                if cu != old.client_uuid:
                    raise Problem(422, "invalid_commit", "a leaf cannot change its client")
                continue
            new_rows[leaf] = self.client_of(credential, key)
        if external:
            mine = [leaf for leaf, (cu, _) in new_rows.items() if cu == p.client_uuid]
            if len(mine) != 1:
                raise Problem(422, "credential_mismatch", "the joiner's leaf is not the caller")
            committer_leaf = mine[0]
            for leaf in removed:
                if by_leaf[leaf].client_uuid != p.client_uuid if leaf in by_leaf else True:
                    raise Problem(
                        403, "role_required", "an external commit may only remove its own leaf"
                    )
        return _StagedCommit(
            obs,
            observed,
            committer_leaf,
            committer_user,
            new_rows,
            removed,
            check_senders,
            obs.to_bytes(),
        )

    async def submit_commit(
        self, p: Principal, group_id: bytes, body: bytes, queue_id: bytes | None
    ) -> tuple[int, int]:
        bundle = wire.decode_commit_bundle(body)
        pm = self._public(bundle.commit)
        content = pm.content
        if content.content_type != ContentType.COMMIT:
            raise Problem(422, "wrong_wire_format", "the first message must be a commit")
        if content.group_id != group_id:
            raise Problem(422, "wrong_group", "the commit is for another group")
        commit_hash = hashlib.sha256(bundle.commit).digest()
        row, members, roles = await self._snapshot(group_id)
        if content.epoch != row.epoch:
            if content.epoch + 1 == row.epoch and row.last_commit_hash == commit_hash:
                return row.epoch, row.last_commit_seq  # a retried success: same answer
            raise self._epoch_conflict(row)
        loop = asyncio.get_running_loop()
        await self._prefetch_as(_domain_of(m.user_id) for m in members)
        try:
            staged = await loop.run_in_executor(
                _CPU, self._stage_commit, p, row, members, roles, pm, bundle, queue_id
            )
        except Problem:
            # New members of other domains: each refusal names the next missing AS certificate;
            # load it and try again (bounded: a commit naming more new domains is refused).
            for _ in range(MAX_NEW_DOMAINS_PER_COMMIT):
                if not await self._prefetch_missing():
                    raise
                try:
                    staged = await loop.run_in_executor(
                        _CPU, self._stage_commit, p, row, members, roles, pm, bundle, queue_id
                    )
                    break
                except Problem:
                    continue
            else:
                raise
        obs, observed = staged.observer, staged.observed
        committer_leaf, committer_user = staged.committer_leaf, staged.committer_user
        new_rows, removed, by_leaf = (
            staged.new_rows,
            staged.removed,
            {m.leaf_index: m for m in members},
        )
        if staged.check_senders:
            await self._require_external_sender(obs)
        added_users = await self._check_adds(p, committer_user, new_rows, committer_leaf)
        new_state = staged.state
        queue_domain = p.domain if isinstance(p, RemotePrincipal) else None
        async with self.db.transaction() as conn:
            if queue_id is not None and queue_domain is None:  # a remote one: its QS checked
                await self.queues.check_owner(conn, queue_id, p.client_uuid)
            seq = (
                await conn.execute(
                    sa.update(ds_groups)
                    .where(ds_groups.c.id == group_id, ds_groups.c.epoch == row.epoch)
                    .values(
                        epoch=observed.epoch,
                        last_seq=ds_groups.c.last_seq + 1,
                        rev=ds_groups.c.rev + 1,
                        state=new_state,
                        group_info=bundle.group_info,
                        last_commit_hash=commit_hash,
                        last_commit_seq=ds_groups.c.last_seq + 1,
                    )
                    .returning(ds_groups.c.last_seq)
                )
            ).scalar_one_or_none()
            if seq is None:
                current = await conn.execute(
                    sa.select(ds_groups.c.epoch, ds_groups.c.last_seq).where(
                        ds_groups.c.id == group_id
                    )
                )
                cur = current.first()
                if cur is None:
                    raise Problem(404, "group_not_found", "no such group")
                raise self._epoch_conflict(cur)
            # The commit goes to the members that stay; removed leaves get nothing from this
            # commit on (they learn it from 403 not_member), new members start from the Welcome.
            before = await self._members(conn, group_id)
            staying = [m for m in before if m.leaf_index not in removed]
            remote_domains = {m.queue_domain for m in staying if m.queue_domain} | {
                _domain_of(u) for u in added_users if _domain_of(u) != self.domain
            }
            if remote_domains and self.federation is not None:
                await self.federation.lock_destinations_in(conn, remote_domains)
            await self._fanout(
                conn, group_id, seq, wire.ITEM_MLS_MESSAGE, bundle.commit, staying, committer_leaf
            )
            gone_leaves = [
                leaf for leaf in by_leaf if leaf in removed or leaf in new_rows
            ]  # replaced leaves too
            if gone_leaves:
                for t in (ds_members, ds_held):
                    await conn.execute(
                        sa.delete(t).where(
                            t.c.group_id == group_id, t.c.leaf_index.in_(gone_leaves)
                        )
                    )
            if new_rows:
                await conn.execute(
                    sa.insert(ds_members),
                    [
                        {
                            "group_id": group_id,
                            "leaf_index": leaf,
                            "client_uuid": cu,
                            "user_id": uid,
                            "queue_id": queue_id if leaf == committer_leaf else None,
                            "queue_domain": queue_domain if leaf == committer_leaf else None,
                            "policy": None,
                            "gone": False,
                        }
                        for leaf, (cu, uid) in new_rows.items()
                    ],
                )
            remaining = await self._members(conn, group_id)
            if bundle.welcome is not None:
                await self._deliver_welcome(
                    conn, group_id, seq, committer_user, added_users, bundle.welcome
                )
            # Roles of users who left the group entirely go with them.
            still = {m.user_id for m in remaining}
            for uid in roles:
                if uid not in still:
                    await conn.execute(
                        sa.delete(ds_roles).where(
                            ds_roles.c.group_id == group_id, ds_roles.c.user_id == uid
                        )
                    )
            await conn.execute(
                sa.delete(ds_sends).where(
                    ds_sends.c.group_id == group_id,
                    ds_sends.c.created_at < self.now() - SEND_ID_RETENTION,
                )
            )
        if any(m.gone for m in remaining):
            self.wake_events()  # outstanding server Removes are issued again for the new epoch
        return observed.epoch, seq

    def _epoch_conflict(self, row: sa.Row) -> Problem:
        return Problem(
            409,
            "epoch_conflict",
            f"the group is at epoch {row.epoch}",
            extra={"epoch": row.epoch, "group_seq": row.last_seq},
        )

    def _public(self, data: bytes):  # type: ignore[no-untyped-def]
        try:
            return wire.public_message(data)
        except wire.WrongWireFormat:
            raise Problem(
                422, "wrong_wire_format", "handshake messages must be PublicMessage"
            ) from None

    def _check_roles(
        self,
        proposals: list[QueuedProposal],
        by_leaf: dict[int, Member],
        roles: dict[str, str],
        committer_user: str,
        p: Principal,
        external: bool,
    ) -> list[Add]:
        """Role rules by proposer (docs/api.md): returns the Adds."""
        adds: list[Add] = []
        for q in proposals:
            body = q.proposal.body
            if q.sender_type == SenderType.EXTERNAL:
                continue  # the homeserver's own Remove proposals
            if q.sender_type == SenderType.MEMBER:
                proposer = by_leaf.get(q.sender_index)  # type: ignore[arg-type]
                proposer_user = proposer.user_id if proposer else None
            else:  # new_member_proposal / new_member_commit: judged by the committer
                proposer_user = committer_user if not external else None
            is_admin = proposer_user is not None and roles.get(proposer_user) == ADMIN
            if isinstance(body, Add):
                adds.append(body)
                if not is_admin:
                    raise Problem(403, "role_required", "only admins add members")
            elif isinstance(body, Remove):
                target = by_leaf.get(body.removed)
                own = target is not None and target.user_id == proposer_user
                if external:
                    continue  # checked against the joiner's own leaves by the caller
                if not (own or is_admin):
                    raise Problem(403, "role_required", "only admins remove other members")
            elif isinstance(body, GroupContextExtensions | ReInit) and not is_admin:
                raise Problem(403, "role_required", "only admins change the group")
        return adds

    async def _check_adds(
        self,
        p: Principal,
        committer_user: str,
        new_rows: dict[int, tuple[str, str]],
        committer_leaf: int | None,
    ) -> dict[str, str]:
        """Added clients exist and belong to the committer's user or a connected user; returns
        user id -> user uuid of the added users (for Welcome delivery)."""
        out: dict[str, str] = {}
        async with self.db.engine.connect() as conn:
            if committer_user == p.user_id:  # also a remote principal (uuid its server reported)
                committer_uuid: str | None = p.user_uuid
            else:
                committer = await self.auth.find_user(committer_user, conn)
                committer_uuid = committer.uuid if committer else None
            for leaf, (cu, uid) in new_rows.items():
                if leaf == committer_leaf:
                    continue
                if _domain_of(uid) == self.domain:
                    if await self.auth.get_client(cu, conn) is None:
                        raise Problem(422, "credential_mismatch", "an added client does not exist")
                    user = await self.auth.find_user(uid, conn)
                    user_uuid = user.uuid if user else None
                else:
                    user_uuid = await self._remote_add(conn, p, committer_user, cu, uid)
                    if user_uuid == "":
                        out[uid] = ""
                        continue
                if user_uuid is None or committer_uuid is None:
                    raise Problem(422, "credential_mismatch", "an added user does not exist")
                if user_uuid != committer_uuid and not await self.connections.is_connected(
                    conn, committer_uuid, user_uuid
                ):
                    raise Problem(403, "no_connection", f"{uid} is not connected to the committer")
                out[uid] = user_uuid
        return out

    async def client_uuid_taken(
        self, conn: AsyncConnection, client_uuid: str, user_id: str
    ) -> bool:
        """Members are matched by client uuid: a remote client's may not be a local client's
        or another user's member client's."""
        taken = await conn.execute(
            sa.select(ds_members.c.client_uuid)
            .where(ds_members.c.client_uuid == client_uuid, ds_members.c.user_id != user_id)
            .limit(1)
        )
        if taken.first() is not None:
            return True
        return await self.auth.get_client(client_uuid, conn) is not None

    async def _remote_add(
        self, conn: AsyncConnection, p: Principal, committer_user: str, cu: str, uid: str
    ) -> str | None:
        """An added client of another domain (credential already verified against its AS):
        the uuid its server reported for the user (from the connection rows), or "" when the
        committer is of another domain too: their connection lives on their servers, not here —
        the added user's server gave out the KeyPackage under its claim rule and checks the
        inviter's connection again when the Welcome arrives (``ds.welcome``)."""
        if await self.client_uuid_taken(conn, cu, uid):
            raise Problem(422, "credential_mismatch", "the added client's id is already in use")
        if isinstance(p, RemotePrincipal) and _domain_of(committer_user) == p.domain:
            return ""
        return await self.connections.remote_user_uuid(conn, uid)

    async def _deliver_welcome(
        self,
        conn: AsyncConnection,
        group_id: bytes,
        seq: int,
        committer_user: str,
        added_users: dict[str, str],
        welcome: bytes,
    ) -> None:
        encoded = base64.urlsafe_b64encode(welcome).rstrip(b"=").decode()
        event = json.dumps(
            {
                "type": "welcome",
                "group_id": b64u(group_id),
                "from": committer_user,
                "group_seq": seq,
                "payload": encoded,
                "sent_at": self.now(),
            }
        ).encode()
        local = {u for uid, u in added_users.items() if _domain_of(uid) == self.domain}
        for user_uuid in sorted(local):
            await self.queues.enqueue_direct(conn, user_uuid, event)
        for uid in sorted(u for u in added_users if _domain_of(u) != self.domain):
            # To the user's direct queue on its server (outbox, same transaction).
            if self.federation is None:
                log.warning("a Welcome for a remote user dropped: federation is not running")
                continue
            await self.federation.welcome_in(conn, _domain_of(uid), uid, event)

    # ---- joiners register their queue ----------------------------------------------------------

    async def register_queue(self, p: Principal, group_id: bytes, queue_id: bytes) -> None:
        async with self.db.transaction() as conn:
            row = await self._group(conn, group_id)
            # Lock order everywhere: the group row, then member rows, then queue counters.
            await self._bump_rev(conn, group_id)
            queue_domain = p.domain if isinstance(p, RemotePrincipal) else None
            if queue_domain is None:  # a remote member's QS checked its ownership
                await self.queues.check_owner(conn, queue_id, p.client_uuid)
            members = await self._members(conn, group_id)
            mine = self._my_leaf(members, p.client_uuid)
            if mine is None:
                raise Problem(403, "not_member", "the calling client holds no leaf in this group")
            await conn.execute(
                sa.update(ds_members)
                .where(
                    ds_members.c.group_id == group_id, ds_members.c.leaf_index == mine.leaf_index
                )
                .values(queue_id=queue_id, queue_domain=queue_domain)
            )
            held = list(
                await conn.execute(
                    sa.select(ds_held.c.group_seq, ds_held.c.item_type, ds_held.c.body)
                    .where(ds_held.c.group_id == group_id, ds_held.c.leaf_index == mine.leaf_index)
                    .order_by(ds_held.c.group_seq)
                )
            )
            policy = mine.policy.encode() if mine.policy else b""
            queued = [
                (queue_id, wire.queue_item(row.id, h.group_seq, policy, h.item_type, h.body))
                for h in held
            ]
            if queue_domain is not None:
                if queued:
                    await self._remote_items(conn, {queue_domain: queued})
            else:
                for qid, item in queued:
                    await self.queues.enqueue_in(conn, qid, item, None)
            if held:
                await conn.execute(
                    sa.delete(ds_held).where(
                        ds_held.c.group_id == group_id, ds_held.c.leaf_index == mine.leaf_index
                    )
                )

    # ---- application messages (hot path) -------------------------------------------------------

    async def send(self, p: Principal, group_id: bytes, message_id: str, body: bytes) -> int:
        try:
            header = wire.read_private_header(body)
        except wire.WrongWireFormat:
            raise Problem(
                422, "wrong_wire_format", "application messages are PrivateMessage"
            ) from None
        if header.content_type != ContentType.APPLICATION:
            raise Problem(422, "wrong_wire_format", "handshakes must be sent as PublicMessage")
        if header.group_id != group_id:
            raise Problem(422, "wrong_group", "the message is for another group")
        # Group commit: sends that arrive while a batch is being written go together in the
        # next transaction, whatever their groups: one BEGIN/NOTIFY/COMMIT (and fsync) and, on
        # PostgreSQL, two statements for all; each is answered only after that commit.
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._send_waiting.append(_PendingSend(p, group_id, message_id, header, body, done))
        if self._send_writer is None:
            self._send_writer = asyncio.create_task(self._write_waiting_sends())
        return await done

    async def _write_waiting_sends(self) -> None:
        """Write the waiting sends, a batch per transaction, until none are left."""
        waiting = self._send_waiting
        batch: list[_PendingSend] = []
        try:
            while waiting:
                batch = waiting[:SEND_BATCH_MAX]
                del waiting[: len(batch)]
                await self._write_sends(batch)
        finally:
            self._send_writer = None
            for item in batch + waiting:  # cancelled (shutdown) mid-way: do not hang them
                if not item.done.done():
                    item.done.set_exception(Problem(503, "service_unavailable", "retry later"))
            waiting.clear()

    async def _write_sends(self, batch: list[_PendingSend]) -> None:
        # A refused send rolls its whole batch back (its seq must not leave a gap): sends that
        # the cached view of their group already refuses (not a member, outside the epoch
        # window) are written alone, so a stale or hostile sender cannot slow the others.
        alone: list[_PendingSend] = []
        together: list[_PendingSend] = []
        for item in batch:
            (alone if self._likely_refused(item) else together).append(item)
        batch = together
        if len(batch) > 1:
            try:
                async with self.db.transaction() as conn:
                    seqs = await self._send_many_in(conn, batch)
            except Exception:  # noqa: BLE001 - a send refused or retried (rare): rolled back,
                pass  # written alone below, so only that one fails
            else:
                for item, seq in zip(batch, seqs, strict=True):
                    if not item.done.done():
                        item.done.set_result(seq)
                batch = []
        for item in alone + batch:
            try:
                seq = await self._send_alone(
                    item.p, item.group_id, item.message_id, item.header, item.body
                )
            except Exception as e:  # noqa: BLE001 - handed to the waiting request
                if not item.done.done():
                    item.done.set_exception(e)
            else:
                if not item.done.done():
                    item.done.set_result(seq)

    def _likely_refused(self, item: _PendingSend) -> bool:
        """What the last seen state of the group says of ``item`` (may be stale either way)."""
        cached = self._member_cache.get(item.group_id)
        if cached is None:
            return False
        if self._my_leaf(cached[1], item.p.client_uuid) is None:
            return True
        epoch = self._epoch_seen.get(item.group_id)
        return epoch is not None and item.header.epoch + APP_EPOCH_WINDOW < epoch

    async def _send_many_in(self, conn: AsyncConnection, batch: list[_PendingSend]) -> list[int]:
        """A batch of sends to any groups: the seqs and idempotency records, then the fan-out
        of every send at once (on PostgreSQL two statements in all). Any send refused
        (duplicate, not a member, epoch, no such group) raises: the caller rolls back and
        writes them one by one."""
        if conn.dialect.name == "postgresql":
            rows = await self._take_seqs_pg(conn, batch)
        else:
            rows = await self._take_seqs_generic(conn, batch)
        by_group: dict[bytes, list[Member]] = {}
        local_only = True
        items: list[tuple[bytes, bytes]] = []
        senders: list[Member] = []
        for item, (seq, epoch, rev) in zip(batch, rows, strict=True):
            members = by_group.get(item.group_id)
            if members is None:
                members = by_group[item.group_id] = await self._members_at(conn, item.group_id, rev)
                # Held items or remote queues (outbox) take the general fan-out below.
                local_only = local_only and all(
                    m.queue_id is not None and m.queue_domain is None for m in members if not m.gone
                )
                self._epoch_seen[item.group_id] = epoch  # one epoch per group in a batch
                if len(self._epoch_seen) > MEMBER_CACHE_SIZE:
                    del self._epoch_seen[next(iter(self._epoch_seen))]
            mine = self._my_leaf(members, item.p.client_uuid)
            if mine is None:
                raise Problem(403, "not_member", "the calling client holds no leaf in this group")
            epoch_of = item.header.epoch
            if epoch_of > epoch or epoch_of + APP_EPOCH_WINDOW < epoch:
                raise Problem(409, "epoch_conflict", f"the group is at epoch {epoch}")
            senders.append(mine)
            for m in members:
                if m.gone or m is mine or m.queue_id is None:
                    continue
                policy = m.policy.encode() if m.policy else b""
                items.append(
                    (
                        m.queue_id,
                        wire.queue_item(
                            item.group_id, seq, policy, wire.ITEM_MLS_MESSAGE, item.body
                        ),
                    )
                )
        seqs = [r[0] for r in rows]
        if not local_only:
            for item, mine, seq in zip(batch, senders, seqs, strict=True):
                await self._fanout(
                    conn,
                    item.group_id,
                    seq,
                    wire.ITEM_MLS_MESSAGE,
                    item.body,
                    by_group[item.group_id],
                    mine.leaf_index,
                )
        elif items:
            await self.queues.enqueue_sequence_in(conn, items)
        return seqs

    async def _take_seqs_pg(
        self, conn: AsyncConnection, batch: list[_PendingSend]
    ) -> list[tuple[int, int, int]]:
        """(group_seq, epoch, rev) of each send, idempotency records written: one statement."""
        driver = await pg_driver(conn)
        rows = await driver.fetch(
            _SEND_BATCH_PG,
            [i.group_id for i in batch],
            [i.p.client_uuid for i in batch],
            [i.message_id for i in batch],
            self.now(),
            sorted({i.group_id for i in batch}),
        )
        if len(rows) != len(batch) or rows[0][3] != len(batch):
            raise _Duplicate
        return [(r[0], r[1], r[2]) for r in rows]

    async def _take_seqs_generic(
        self, conn: AsyncConnection, batch: list[_PendingSend]
    ) -> list[tuple[int, int, int]]:
        """The same on SQLite: one counter update per group, one insert for the records."""
        counts = Counter(i.group_id for i in batch)
        # group -> [last seq handed out, epoch, rev]
        next_of = await reserve_ranges(conn, ds_groups, counts, ds_groups.c.epoch, ds_groups.c.rev)
        if len(next_of) != len(counts):
            raise _Duplicate  # no such group: written alone, which answers 404
        rows: list[tuple[int, int, int]] = []
        for item in batch:
            st = next_of[item.group_id]
            st[0] += 1
            rows.append((st[0], st[1], st[2]))
        now = self.now()
        stored = await conn.execute(
            _insert(conn, ds_sends).on_conflict_do_nothing(
                index_elements=["group_id", "client_uuid", "message_id"]
            ),
            [
                {
                    "group_id": item.group_id,
                    "client_uuid": item.p.client_uuid,
                    "message_id": item.message_id,
                    "group_seq": seq,
                    "created_at": now,
                }
                for item, (seq, _, _) in zip(batch, rows, strict=True)
            ],
        )
        if stored.rowcount != len(batch):
            raise _Duplicate
        return rows

    async def _send_alone(
        self, p: Principal, group_id: bytes, message_id: str, header: wire.AppHeader, body: bytes
    ) -> int:
        try:
            async with self.db.transaction() as conn:
                return await self._send_in(conn, p, group_id, message_id, header, body)
        except _Duplicate:
            # A retried send: answer with the first copy's position (nothing was stored now).
            async with self.db.engine.connect() as conn:
                return (
                    await conn.execute(
                        sa.select(ds_sends.c.group_seq).where(
                            ds_sends.c.group_id == group_id,
                            ds_sends.c.client_uuid == p.client_uuid,
                            ds_sends.c.message_id == message_id,
                        )
                    )
                ).scalar_one()

    async def _send_in(
        self,
        conn: AsyncConnection,
        p: Principal,
        group_id: bytes,
        message_id: str,
        header: wire.AppHeader,
        body: bytes,
    ) -> int:
        # Taking the next seq locks the group row: the members read below are the ones of this
        # position in the group order (a commit cannot interleave). Idempotence needs no prior
        # lookup: an earlier or concurrent copy of the message id makes the insert a no-op
        # (PostgreSQL waits for an in-flight copy's transaction, then skips) and we roll back.
        now = self.now()
        if conn.dialect.name == "postgresql":
            driver = await pg_driver(conn)
            got = await driver.fetchrow(_SEND_PG, group_id, p.client_uuid, message_id, now)
            if got is None:
                await self._group(conn, group_id)  # 404 if it does not exist
                raise _Duplicate
            seq, epoch, rev = got
            members = await self._members_at(conn, group_id, rev)
            mine = self._my_leaf(members, p.client_uuid)
            if mine is None:
                raise Problem(403, "not_member", "the calling client holds no leaf in this group")
        else:
            got = (
                await conn.execute(
                    sa.update(ds_groups)
                    .where(ds_groups.c.id == group_id)
                    .values(last_seq=ds_groups.c.last_seq + 1)
                    .returning(ds_groups.c.last_seq, ds_groups.c.epoch, ds_groups.c.rev)
                )
            ).first()
            if got is None:
                raise Problem(404, "group_not_found", "no such group")
            seq, epoch, rev = got
            members = await self._members_at(conn, group_id, rev)
            mine = self._my_leaf(members, p.client_uuid)
            if mine is None:
                raise Problem(403, "not_member", "the calling client holds no leaf in this group")
            inserted = await conn.execute(
                _insert(conn, ds_sends)
                .values(
                    group_id=group_id,
                    client_uuid=p.client_uuid,
                    message_id=message_id,
                    group_seq=seq,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["group_id", "client_uuid", "message_id"])
            )
            if inserted.rowcount == 0:
                raise _Duplicate
        if header.epoch > epoch or header.epoch + APP_EPOCH_WINDOW < epoch:
            raise Problem(
                409,
                "epoch_conflict" if header.epoch > epoch else "epoch_too_old",
                f"the group is at epoch {epoch}",
                extra={"epoch": epoch, "group_seq": seq - 1},
            )
        await self._fanout(
            conn, group_id, seq, wire.ITEM_MLS_MESSAGE, body, members, mine.leaf_index
        )
        return seq

    async def _members_at(self, conn: AsyncConnection, group_id: bytes, rev: int) -> list[Member]:
        """The member list at ``rev``: every change to ds_members bumps ``rev`` in the same
        transaction, so (group, rev) names one immutable list (safe across processes too)."""
        hit = self._member_cache.get(group_id)
        if hit is not None and hit[0] == rev:
            self._member_cache.move_to_end(group_id)
            return hit[1]
        members = await self._members(conn, group_id)
        self._member_cache[group_id] = (rev, members)
        if len(self._member_cache) > MEMBER_CACHE_SIZE:
            self._member_cache.popitem(last=False)
        return members

    async def _bump_rev(self, conn: AsyncConnection, group_id: bytes) -> None:
        await conn.execute(
            sa.update(ds_groups).where(ds_groups.c.id == group_id).values(rev=ds_groups.c.rev + 1)
        )

    # ---- standalone proposals ------------------------------------------------------------------

    async def submit_proposal(self, p: Principal, group_id: bytes, body: bytes) -> int:
        pm = self._public(body)
        content = pm.content
        if content.content_type != ContentType.PROPOSAL:
            raise Problem(422, "wrong_wire_format", "expected a proposal")
        if content.group_id != group_id:
            raise Problem(422, "wrong_group", "the proposal is for another group")
        if content.sender.sender_type != SenderType.MEMBER:
            raise Problem(403, "not_member", "proposals come from members")
        for _ in range(PROPOSAL_RETRIES):
            row, members, roles = await self._snapshot(group_id)
            if content.epoch != row.epoch:
                raise self._epoch_conflict(row)
            by_leaf = {m.leaf_index: m for m in members}
            m = by_leaf.get(content.sender.index)  # type: ignore[arg-type]
            if m is None or m.gone or m.client_uuid != p.client_uuid:
                raise Problem(403, "not_member", "the proposal's sender is not the calling client")
            obs = self._observer(row.state)
            try:
                observed = obs.apply(pm)
            except MLSError as e:
                if await self._prefetch_missing():
                    continue  # an Add of another domain's client: its AS certificate is here now
                raise _mls_problem("invalid_proposal", e) from None
            q = QueuedProposal(observed.proposal, SenderType.MEMBER, m.leaf_index)  # type: ignore[arg-type]
            adds = self._check_roles([q], by_leaf, roles, m.user_id, p, False)
            if adds:
                cu, uid = self.client_of(
                    adds[0].key_package.leaf_node.credential,
                    adds[0].key_package.leaf_node.signature_key,
                )
                await self._check_adds(p, m.user_id, {-1: (cu, uid)}, None)
            seq = await self._store_proposals(
                group_id, row.rev, obs.to_bytes(), [body], members, m.leaf_index
            )
            if seq is not None:
                return seq
        raise Problem(409, "conflict", "the group changed concurrently; retry")

    async def _store_proposals(
        self,
        group_id: bytes,
        rev: int,
        state: bytes,
        messages: list[bytes],
        members: list[Member],
        exclude_leaf: int | None,
    ) -> int | None:
        """Store the observer with new cached proposals if nobody changed it meanwhile, and fan
        the proposal messages out (one group_seq each). None: lost the race, retry."""
        n = len(messages)
        async with self.db.transaction() as conn:
            last = (
                await conn.execute(
                    sa.update(ds_groups)
                    .where(ds_groups.c.id == group_id, ds_groups.c.rev == rev)
                    .values(state=state, rev=rev + 1, last_seq=ds_groups.c.last_seq + n)
                    .returning(ds_groups.c.last_seq)
                )
            ).scalar_one_or_none()
            if last is None:
                return None
            for i, msg in enumerate(messages):
                await self._fanout(
                    conn,
                    group_id,
                    last - n + 1 + i,
                    wire.ITEM_MLS_MESSAGE,
                    msg,
                    members,
                    exclude_leaf,
                )
            return last

    # ---- roles, settings, policy ---------------------------------------------------------------

    async def _require_admin(self, conn: AsyncConnection, group_id: bytes, p: Principal) -> None:
        await self._group(conn, group_id)
        members = await self._members(conn, group_id)
        if self._my_leaf(members, p.client_uuid) is None:
            raise Problem(403, "not_member", "not a member of this group")
        role = (
            await conn.execute(
                sa.select(ds_roles.c.role).where(
                    ds_roles.c.group_id == group_id, ds_roles.c.user_id == p.user_id
                )
            )
        ).scalar_one_or_none()
        if role != ADMIN:
            raise Problem(403, "role_required", "only admins may do this")

    async def set_role(self, p: Principal, group_id: bytes, user_id: str, role: str) -> None:
        async with self.db.transaction() as conn:
            await self._bump_rev(conn, group_id)  # lock the group row first; see _snapshot
            await self._require_admin(conn, group_id, p)
            members = await self._members(conn, group_id)
            if not any(m.user_id == user_id and not m.gone for m in members):
                raise Problem(404, "user_not_member", f"{user_id} has no client in this group")
            await conn.execute(
                sa.delete(ds_roles).where(
                    ds_roles.c.group_id == group_id, ds_roles.c.user_id == user_id
                )
            )
            if role != MEMBER:
                await conn.execute(
                    sa.insert(ds_roles).values(group_id=group_id, user_id=user_id, role=role)
                )

    async def update_settings(
        self, p: Principal, group_id: bytes, external_join: bool
    ) -> GroupView:
        async with self.db.transaction() as conn:
            await self._require_admin(conn, group_id, p)
            await conn.execute(
                sa.update(ds_groups)
                .where(ds_groups.c.id == group_id)
                .values(external_join=external_join)
            )
            return await self._view(conn, await self._group(conn, group_id), p.client_uuid)

    async def set_policy(self, p: Principal, group_id: bytes, policy: str | None) -> None:
        async with self.db.transaction() as conn:
            await self._group(conn, group_id)
            await self._bump_rev(conn, group_id)  # lock the group row first (see above)
            mine = self._my_leaf(await self._members(conn, group_id), p.client_uuid)
            if mine is None:
                raise Problem(403, "not_member", "not a member of this group")
            await conn.execute(
                sa.update(ds_members)
                .where(
                    ds_members.c.group_id == group_id, ds_members.c.leaf_index == mine.leaf_index
                )
                .values(policy=policy)
            )

    # ---- deletion and notices -------------------------------------------------------------------

    async def _notice(self, cipher_suite: int, notice: dict[str, object]) -> bytes:
        key = await self.external_sender(cipher_suite)
        return wire.signed_notice(get_cipher_suite(cipher_suite), key.private_key, notice)

    async def delete_group(self, p: Principal, group_id: bytes) -> None:
        async with self.db.engine.connect() as conn:
            row = await self._group(conn, group_id)
        notice = await self._notice(
            row.cipher_suite,
            {
                "type": "group_deleted",
                "group_id": b64u(group_id),
                "user_id": p.user_id,
                "at": self.now(),
            },
        )
        async with self.db.transaction() as conn:
            await self._require_admin(conn, group_id, p)
            seq = (
                await conn.execute(
                    sa.update(ds_groups)
                    .where(ds_groups.c.id == group_id)
                    .values(last_seq=ds_groups.c.last_seq + 1)
                    .returning(ds_groups.c.last_seq)
                )
            ).scalar_one()
            members = [m for m in await self._members(conn, group_id) if m.queue_id is not None]
            await self._fanout(conn, group_id, seq, wire.ITEM_SERVER_NOTICE, notice, members)
            await self._delete_group_rows(conn, group_id)

    async def _delete_group_rows(self, conn: AsyncConnection, group_id: bytes) -> None:
        # Explicit deletes: SQLite does not enforce ON DELETE CASCADE without a pragma.
        for t in (ds_members, ds_roles, ds_held, ds_sends):
            await conn.execute(sa.delete(t).where(t.c.group_id == group_id))
        await conn.execute(sa.delete(ds_groups).where(ds_groups.c.id == group_id))

    # ---- account events: server Remove proposals and notices -----------------------------------

    def wake_events(self) -> None:
        self._events_wake.set()

    async def _hook_client_removed(self, conn: AsyncConnection, client_uuid: str) -> None:
        self.wake_events()

    async def _hook_user_deleted(
        self, conn: AsyncConnection, user_uuid: str, client_uuids: list[str]
    ) -> None:
        self.wake_events()

    def install_hooks(self) -> None:
        self.auth.on_client_removed.append(self._hook_client_removed)
        self.auth.on_user_deleted.append(self._hook_user_deleted)

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run_events())

    async def stop(self) -> None:
        self._stopping = True
        self._events_wake.set()
        if self._task is not None:
            self._task.cancel()
            # A cancellation landing inside a database call can surface as another error
            # (e.g. PendingRollbackError); the loop exits on the flag either way.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=5.0)
            self._task = None

    async def _run_events(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._events_wake.wait(), timeout=1.0)
            self._events_wake.clear()
            if self._stopping:
                return
            try:
                # Let the transaction that woke us commit first.
                await asyncio.sleep(0.02)
                await self.process_account_events()
                if self.clock() - self._last_prune >= PRUNE_INTERVAL:
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping:
                    return
                log.exception("processing account events failed")

    async def prune(self) -> int:
        """Delete idempotency records older than the retention (they only answer retries)."""
        self._last_prune = self.clock()
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(ds_sends).where(ds_sends.c.created_at < self.now() - SEND_ID_RETENTION)
            )
        return result.rowcount or 0

    async def process_account_events(self) -> int:
        """Consume the AS outbox: mark deleted clients gone, issue Remove proposals, notices.

        One consumer at a time: a lock within the process, and on PostgreSQL an advisory lock
        across the processes sharing the database (a process that does not get it leaves the
        events to the one that holds it), so no event yields two Removes or two notices."""
        async with self._events_lock, self._account_events_consumer() as mine:
            return await self._process_account_events() if mine else 0

    @contextlib.asynccontextmanager
    async def _account_events_consumer(self):  # type: ignore[no-untyped-def]
        if self.db.is_sqlite:  # SQLite serves one process (docs/operations.md)
            yield True
            return
        # Transaction-scoped: whatever ends this block (even a cancellation) ends the
        # transaction, and with it the lock.
        async with self.db.engine.connect() as conn:
            got = (
                await conn.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ACCOUNT_EVENTS_LOCK_KEY}
                )
            ).scalar()
            yield bool(got)

    async def _process_account_events(self) -> int:
        done = 0
        while True:
            events = await self.auth.pending_account_events()
            if not events:
                break
            touched: set[bytes] = set()
            for ev in events:
                payload = json.loads(ev.payload)
                if ev.event_type == "client_removed":
                    touched |= await self._clients_gone([payload["client_id"]])
                elif ev.event_type == "user_deleted":
                    touched |= await self._clients_gone(payload.get("client_ids", []))
                    await self._user_notice(
                        ev.user_id,
                        {
                            "type": "user_deleted",
                            "user_id": ev.user_id,
                            "client_ids": payload.get("client_ids", []),
                        },
                        drop_roles=True,
                    )
                elif ev.event_type == "display_name_changed":
                    await self._user_notice(
                        ev.user_id,
                        {
                            "type": "display_name_changed",
                            "user_id": ev.user_id,
                            "display_name": payload.get("display_name"),
                        },
                    )
            await self.auth.mark_account_events_processed([ev.id for ev in events])
            done += len(events)
            for gid in touched:
                await self.issue_removes(gid)
        # Groups whose outstanding Removes were dropped by a commit get them again.
        async with self.db.engine.connect() as conn:
            pending = [
                r.group_id
                for r in await conn.execute(
                    sa.select(ds_members.c.group_id).where(ds_members.c.gone.is_(True)).distinct()
                )
            ]
        for gid in pending:
            await self.issue_removes(gid)
        return done

    async def _clients_gone(self, client_ids: list[str]) -> set[bytes]:
        # Matched on user id AND client uuid: an event from another domain names only that
        # domain's users, so it cannot reach a member of a third domain by its client uuid.
        owners = [c.rpartition("/") for c in client_ids]
        if not owners:
            return set()
        match = sa.or_(
            *(
                sa.and_(ds_members.c.user_id == user_id, ds_members.c.client_uuid == uuid)
                for user_id, _, uuid in owners
            )
        )
        async with self.db.transaction() as conn:
            rows = list(
                await conn.execute(
                    sa.select(ds_members.c.group_id, ds_members.c.leaf_index).where(match)
                )
            )
            for gid in sorted({r.group_id for r in rows}):  # group rows first, in order
                await self._bump_rev(conn, gid)
            await conn.execute(sa.update(ds_members).where(match).values(gone=True, queue_id=None))
            for r in rows:
                await conn.execute(
                    sa.delete(ds_held).where(
                        ds_held.c.group_id == r.group_id, ds_held.c.leaf_index == r.leaf_index
                    )
                )
        return {r.group_id for r in rows}

    async def _user_notice(
        self, user_id: str, notice: dict[str, object], drop_roles: bool = False
    ) -> None:
        async with self.db.engine.connect() as conn:
            gids = [
                r.group_id
                for r in await conn.execute(
                    sa.select(ds_members.c.group_id)
                    .where(ds_members.c.user_id == user_id)
                    .distinct()
                )
            ]
        for gid in gids:
            async with self.db.engine.connect() as conn:
                row = (
                    await conn.execute(sa.select(ds_groups).where(ds_groups.c.id == gid))
                ).first()
            if row is None:
                continue
            signed = await self._notice(
                row.cipher_suite, {**notice, "group_id": b64u(gid), "at": self.now()}
            )
            async with self.db.transaction() as conn:
                seq = (
                    await conn.execute(
                        sa.update(ds_groups)
                        .where(ds_groups.c.id == gid)
                        .values(
                            last_seq=ds_groups.c.last_seq + 1,
                            # Dropping roles changes what _snapshot pairs with the row.
                            rev=ds_groups.c.rev + int(drop_roles),
                        )
                        .returning(ds_groups.c.last_seq)
                    )
                ).scalar_one_or_none()
                if seq is None:
                    continue
                members = await self._members(conn, gid)
                await self._fanout(conn, gid, seq, wire.ITEM_SERVER_NOTICE, signed, members)
                if drop_roles:
                    await conn.execute(
                        sa.delete(ds_roles).where(
                            ds_roles.c.group_id == gid, ds_roles.c.user_id == user_id
                        )
                    )

    async def issue_removes(self, group_id: bytes) -> int:
        """External Remove proposals for this epoch for every gone leaf not yet proposed."""
        for _ in range(PROPOSAL_RETRIES):
            async with self.db.engine.connect() as conn:
                row = (
                    await conn.execute(sa.select(ds_groups).where(ds_groups.c.id == group_id))
                ).first()
                if row is None:
                    return 0
                members = await self._members(conn, group_id)
            gone = [m.leaf_index for m in members if m.gone]
            if not gone:
                return 0
            obs = self._observer(row.state)
            found = await self._sender_index(obs)
            if found is None:
                log.warning("group without the homeserver as external sender; cannot remove")
                return 0
            key, index = found
            proposed = {
                q.proposal.body.removed
                for q in obs._proposals.values()  # noqa: SLF001
                if q.sender_type == SenderType.EXTERNAL and isinstance(q.proposal.body, Remove)
            }
            in_tree = {leaf for leaf, _, _ in obs.roster()}
            messages = []
            for leaf in gone:
                if leaf in proposed or leaf not in in_tree:
                    continue
                msg = external_remove(obs.group_context, index, key.private_key, leaf)
                obs.apply(msg)
                messages.append(msg)
            if not messages:
                return 0
            seq = await self._store_proposals(
                group_id, row.rev, obs.to_bytes(), messages, members, None
            )
            if seq is not None:
                return len(messages)
        return 0
