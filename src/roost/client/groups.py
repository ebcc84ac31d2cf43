"""The MLS side of a client: credential policy for groups, joining from a Welcome.

A connection request carries the Welcome to a fresh two-user group: the requester claims one
KeyPackage per client of the responder, creates the group and adds them; the responder's
clients join from the Welcome with the private keys kept for their published KeyPackages.

``Groups`` (below) runs a client's groups over the Delivery Service: create with the
homeserver as external sender, invite, send, sync/listen, leave, remove, promote, delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from roost.mls.constants import CredentialType
from roost.mls.credential import Credential
from roost.mls.errors import MLSError, ValidationError
from roost.mls.framing import MLSMessage
from roost.mls.key_package import KeyPackage
from roost.mls.welcome import Welcome

from .credentials import certificate_client_ids, verify_chain, verify_client_credential
from .errors import CredentialError, RoostError, StateError
from .group_wire import (
    ITEM_SERVER_NOTICE,
    QueueItem,
    SignedNotice,
    decode_group_state,
    encode_commit_bundle,
    encode_group_state,
)
from .history import History, HistoryEntry
from .state import KeyPackageSecrets, _write_private
from .wire import MLS_MEDIA_TYPE, b64u, unb64u

if TYPE_CHECKING:
    from roost.mls.group import Group
    from roost.mls.group.validation import CredentialPolicy

    from .client import RoostClient


# What RoostClient.credential_policy says about a member of a domain whose AS certificate the
# client has not fetched yet (groups spanning domains).
_MISSING_AS = re.compile(r"the AS certificate of (\S+) has not been fetched")


def missing_as_domain(error: Exception) -> str | None:
    m = _MISSING_AS.search(str(error))
    return m.group(1) if m else None


def credential_policy(as_certificate: bytes) -> CredentialPolicy:
    """Accept a group member only with an x509 credential issued by the AS, whose leaf
    certificate binds a client id to exactly the member's signature key."""

    def check(credential: Credential, signature_key: bytes) -> bool:
        if credential.credential_type != CredentialType.X509:
            raise ValidationError("member credential is not x509")
        chain = list(credential.certificates)
        leaf = verify_chain(chain, as_certificate)
        ids = certificate_client_ids(leaf)
        if len(ids) != 1:
            raise ValidationError("member certificate must name exactly one client")
        verify_client_credential(
            chain, as_certificate, client_id=ids[0], signature_key=signature_key
        )
        return True

    return check


def member_client_id(credential: Credential) -> str | None:
    """The client id in a member's (already verified) credential."""
    if credential.credential_type != CredentialType.X509 or not credential.certificates:
        return None
    from .credentials import load_certificate

    ids = certificate_client_ids(load_certificate(credential.certificates[0]))
    return ids[0] if ids else None


def welcome_target(
    welcome: bytes, keypackages: dict[str, KeyPackageSecrets]
) -> tuple[Welcome, str, KeyPackageSecrets]:
    """Decode a Welcome and find which of our KeyPackages (by ref, hex) it is for."""
    msg = MLSMessage.decode(welcome)
    if not isinstance(msg.body, Welcome):
        raise ValidationError("the payload is not a Welcome")
    for s in msg.body.secrets:
        ref = s.new_member.hex()
        secrets = keypackages.get(ref)
        if secrets is not None and secrets.key_package:
            return msg.body, ref, secrets
    raise ValidationError("the Welcome is for none of this client's KeyPackages")


def decode_key_package(secrets: KeyPackageSecrets) -> KeyPackage:
    return KeyPackage.decode(secrets.key_package)


# ---- group operations over the Delivery Service (docs/api.md, "Groups") -----------------------


SERVER_URI_PREFIX = "roost:server:"
_GROUP_CLIENT_FILE = "group_client.json"
COMMIT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class ServerSender:
    """The homeserver's external-sender entry for one cipher suite (verified against the AS)."""

    cipher_suite: int
    signature_key: bytes
    credential: tuple[bytes, ...]
    external_sender: bytes


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """Something that happened in a group, as this client saw it (also kept in the history).

    ``kind``: ``message`` (application data), ``commit`` (epoch change), ``proposal``,
    ``joined``, ``removed`` (we were removed), ``notice`` (verified homeserver notice),
    ``rejected`` (an item that failed to process; ``text`` says why)."""

    kind: str
    group_id: bytes
    sender: str = ""  # client id ("" for the homeserver)
    data: bytes = b""
    epoch: int = 0
    group_seq: int = 0
    text: str = ""
    notice: dict[str, Any] | None = None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    policy: str = ""  # our notification policy for the group, when set (for notifications)

    @property
    def message(self) -> str:
        return self.data.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class SentMessage:
    group_seq: int
    message_id: str
    ciphertext: bytes  # the PrivateMessage as sent (resend it with the same id to retry)


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """A ``GroupOut`` answer of the DS."""

    group_id: bytes
    cipher_suite: int
    epoch: int
    group_seq: int
    external_join: bool
    roles: dict[str, str]
    my_leaf: int | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GroupSummary:
        return cls(
            unb64u(d["group_id"]),
            int(d.get("cipher_suite", 1)),
            int(d["epoch"]),
            int(d.get("group_seq", 0)),
            bool(d.get("external_join", False)),
            dict(d.get("roles") or {}),
            d.get("my_leaf"),
        )


@dataclass(slots=True)
class _Cursors:
    """This client's group-message queue and how far it has processed it and the direct queue."""

    queue_id: str = ""
    queue_after: int = 0
    direct_after: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def group_path(group_id: bytes) -> str:
    return quote(b64u(group_id), safe="")


def new_group_id(domain: str) -> bytes:
    """``<b64u of 16 random bytes>@<domain>`` (the DS routes a group by its domain)."""
    return f"{b64u(os.urandom(16))}@{domain}".encode("ascii")


def _client_of(group: Group, leaf: int) -> str:
    node = group.tree.leaf(leaf)
    if node is None:
        return ""
    return member_client_id(node.credential) or ""


class Groups:
    """Group operations of one ``RoostClient``: create, invite, send, receive, leave, remove,
    promote, delete. Group states live in the client's home (``groups/<id>.mls``), the message
    history under ``history/``; without a home both stay in memory.

    All operations of one ``Groups`` are serialised (one MLS state per group must never be
    used by two operations at once)."""

    def __init__(self, client: RoostClient, *, history: History | None = None) -> None:
        self.client = client
        home = client.home
        self.history = history or History.in_home(home.path if home is not None else None)
        self._groups: dict[bytes, Group] = {}
        self._servers: dict[int, ServerSender] = {}
        self._lock = asyncio.Lock()
        self._cursors = self._load_cursors()
        self.realtime: Any = None  # the live realtime connection while ``listen`` runs
        self._dirty: set[bytes] = set()  # groups changed by received items, not yet saved

    # ---- local state ------------------------------------------------------------------------
    def _cursor_path(self):
        home = self.client.home
        return None if home is None else home.path / _GROUP_CLIENT_FILE

    def _load_cursors(self) -> _Cursors:
        path = self._cursor_path()
        if path is None or not path.exists():
            return _Cursors()
        try:
            d = json.loads(path.read_text())
            return _Cursors(
                str(d.get("queue_id", "")),
                int(d.get("queue_after", 0)),
                int(d.get("direct_after", 0)),
            )
        except (OSError, ValueError, TypeError) as e:
            raise StateError(f"unreadable {path}: {e}") from e

    def _save_cursors(self) -> None:
        path = self._cursor_path()
        if path is None:
            return
        assert self.client.home is not None
        self.client.home.ensure_dir()
        c = self._cursors
        data = {
            "queue_id": c.queue_id,
            "queue_after": c.queue_after,
            "direct_after": c.direct_after,
        }
        _write_private(path, json.dumps(data).encode())

    @property
    def queue_id(self) -> str:
        return self._cursors.queue_id

    def group(self, group_id: bytes) -> Group:
        """The local MLS state of a group we are in (loaded from the home on first use)."""
        g = self._groups.get(group_id)
        if g is None:
            try:
                g = self.client.load_group(group_id)
            except StateError as e:
                raise RoostError(0, "unknown_group", f"not in group {group_id!r}") from e
            self._groups[group_id] = g
        return g

    def local_group_ids(self) -> list[bytes]:
        ids = set(self._groups)
        if self.client.home is not None:
            ids.update(self.client.home.group_ids())
        return sorted(ids)

    def _keep(self, group: Group) -> None:
        self._groups[group.group_id] = group
        self._dirty.discard(group.group_id)
        self.client.save_group(group)

    def _touch(self, group: Group) -> None:
        """A received item changed this state: saved by the next ``_flush`` (one write per
        group per batch, not per message)."""
        self._groups[group.group_id] = group
        self._dirty.add(group.group_id)

    def _flush(self) -> None:
        for gid in sorted(self._dirty):
            group = self._groups.get(gid)
            if group is not None:
                self.client.save_group(group)
        self._dirty.clear()
        self._save_cursors()

    def _forget(self, group_id: bytes) -> None:
        self._dirty.discard(group_id)
        self._groups.pop(group_id, None)
        home = self.client.home
        if home is not None:
            home._group_path(group_id).unlink(missing_ok=True)

    def _record(self, event: GroupEvent, *, outgoing: bool = False) -> GroupEvent:
        text = event.message if event.kind == "message" else event.text
        kind = {"message": "message", "notice": "notice"}.get(event.kind, "commit")
        if event.kind in ("proposal", "rejected"):
            return event  # not part of the conversation
        self.history.append(
            event.group_id,
            HistoryEntry(kind, event.sender, text, event.epoch, event.group_seq, outgoing),
        )
        return event

    async def _with_as_certificates(self, work: Callable[[], Any]) -> Any:
        """Run MLS ``work`` under the credential policy; when a member of another domain whose
        AS certificate we have not fetched yet made it fail, fetch that certificate (through
        our home server) and run it again."""
        fetched: set[str] = set()
        while True:
            try:
                return work()
            except (MLSError, RoostError) as e:
                domain = missing_as_domain(e)
                if domain is None or domain in fetched:
                    raise
                fetched.add(domain)
                await self.client.ensure_as_certificates([domain])

    # ---- the homeserver as external sender ----------------------------------------------------
    async def server_sender(self, cipher_suite: int | None = None) -> ServerSender:
        """The homeserver's external-sender key and credential, verified against the pinned AS
        certificate (SAN ``roost:server:<our domain>``, key = the certificate's key)."""
        from roost.mls.extension_types import ExternalSender

        from .credentials import public_key_bytes

        suite = cipher_suite or self.client.state.cipher_suite
        cached = self._servers.get(suite)
        if cached is not None:
            return cached
        resp = await self.client.request(
            "GET", "/v1/ds/external-sender", params={"cipher_suite": suite}, auth=False
        )
        d = resp.json()
        key = unb64u(d["signature_key"])
        chain = [unb64u(c) for c in d["credential"]]
        leaf = verify_chain(chain, await self.client.as_certificate())
        from cryptography import x509

        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if SERVER_URI_PREFIX + self.client.state.home_domain not in uris:
            raise CredentialError("external-sender certificate does not name our homeserver")
        if public_key_bytes(leaf) != key:
            raise CredentialError("external-sender key differs from its certificate")
        ext = unb64u(d["external_sender"])
        try:
            parsed = ExternalSender.decode(ext)
        except MLSError as e:
            raise CredentialError(f"malformed external_sender: {e}") from e
        if parsed.signature_key != key:
            raise CredentialError("external_sender entry names another key")
        sender = ServerSender(suite, key, tuple(chain), ext)
        self._servers[suite] = sender
        return sender

    # ---- queue set-up ------------------------------------------------------------------------
    async def _ensure_queue(self) -> str:
        if not self._cursors.queue_id:
            self._cursors.queue_id = await self.client.create_queue()
            self._cursors.queue_after = 0
            self._save_cursors()
        return self._cursors.queue_id

    # ---- DS calls ----------------------------------------------------------------------------
    async def list(self) -> list[GroupSummary]:
        """The groups this client is in: the home DS's list, plus the groups of other domains
        this client holds, asked of their DS (through the home server)."""
        d = (await self.client.request("GET", "/v1/groups")).json()
        out = [GroupSummary.from_json(g) for g in d["groups"]]
        home = self.client.state.home_domain.encode()
        for group_id in self.local_group_ids():
            if group_id.rpartition(b"@")[2] == home:
                continue
            try:
                out.append(await self.info(group_id))
            except RoostError as e:
                if e.status not in (403, 404):  # no longer a member, or deleted: not listed
                    raise
        return out

    async def info(self, group_id: bytes) -> GroupSummary:
        resp = await self.client.request("GET", f"/v1/groups/{group_path(group_id)}")
        return GroupSummary.from_json(resp.json())

    async def create(self, *, external_join: bool = False) -> Group:
        """A new group with this client as its only member and the homeserver as external
        sender; the DS records our user as admin."""
        from roost.mls.extension_types import ExternalSender, ExternalSenders
        from roost.mls.group import Group

        server = await self.server_sender()
        queue_id = await self._ensure_queue()
        ext = ExternalSenders((ExternalSender.decode(server.external_sender),)).to_extension()
        st = self.client.state
        async with self._lock:
            group = Group.create(
                st.cipher_suite,
                self.client.credential,
                st.signature_private,
                group_id=new_group_id(st.home_domain),
                extensions=[ext],
                credential_policy=self.client.credential_policy(),
            )
            body = encode_group_state(group.group_info(with_tree=True))
            await self.client.request(
                "POST",
                "/v1/groups",
                params={"queue_id": queue_id, "external_join": str(external_join).lower()},
                content=body,
                content_type=MLS_MEDIA_TYPE,
            )
            self._keep(group)
            self._record(
                GroupEvent("joined", group.group_id, self.client.client_id, text="created")
            )
        return group

    async def _commit(
        self, group_id: bytes, build: Callable[[Group], Any], *, retries: int = COMMIT_RETRIES
    ) -> GroupEvent:
        """Build a commit, submit it with its GroupInfo (and Welcome), merge it once accepted.
        On ``epoch_conflict`` catch up with the queue (the winner's commit is there) and
        rebuild, up to ``retries`` times."""
        for attempt in range(retries + 1):
            async with self._lock:
                group = self.group(group_id)
                out = build(group)
                body = encode_commit_bundle(out.commit, out.group_info, out.welcome)
                try:
                    resp = await self.client.request(
                        "POST",
                        f"/v1/groups/{group_path(group_id)}/commits",
                        content=body,
                        content_type=MLS_MEDIA_TYPE,
                    )
                except RoostError as e:
                    group.clear_pending_commit()
                    if e.code != "epoch_conflict" or attempt == retries:
                        raise
                else:
                    before = {i: _client_of(group, i) for i, _, _ in group.roster()}
                    group.merge_pending_commit()
                    after = {i: _client_of(group, i) for i, _, _ in group.roster()}
                    self._keep(group)
                    seq = int(resp.json().get("group_seq", 0))
                    event = GroupEvent(
                        "commit",
                        group_id,
                        self.client.client_id,
                        epoch=group.epoch,
                        group_seq=seq,
                        added=tuple(c for i, c in after.items() if before.get(i) != c),
                        removed=tuple(c for i, c in before.items() if after.get(i) != c),
                    )
                    return self._record(_describe(event), outgoing=True)
            await self.sync()
        raise AssertionError("unreachable")

    async def commit(
        self, group_id: bytes, *, retries: int = COMMIT_RETRIES, force_path: bool = True
    ) -> GroupEvent:
        """Commit every pending proposal (e.g. a member's leave or the server's Removes),
        with a fresh path (a self-update)."""
        return await self._commit(
            group_id, lambda g: g.commit(force_path=force_path), retries=retries
        )

    async def commit_pending(
        self, group_id: bytes, *, attempts: int = COMMIT_RETRIES
    ) -> GroupEvent | None:
        """Commit the proposals received this epoch (a member's leave, the homeserver's
        Removes), unless another member commits them first; ``None`` when nothing is left to
        commit. Safe to run on every member at once: the DS takes one commit per epoch and the
        losers find the proposals already committed."""
        for _ in range(attempts):
            try:
                if not self.group(group_id).pending_proposal_refs():
                    return None
            except RoostError:
                return None  # no longer in the group
            try:
                return await self._commit(group_id, lambda g: g.commit(), retries=0)
            except RoostError as e:
                if e.code != "epoch_conflict":
                    raise
            await self.sync()
        return None

    async def update(self, group_id: bytes, *, retries: int = COMMIT_RETRIES) -> GroupEvent:
        """A self-update: fresh keys for our leaf (plus whatever proposals are pending)."""
        return await self.commit(group_id, retries=retries)

    async def invite(
        self, group_id: bytes, user_ids: Iterable[str], *, retries: int = COMMIT_RETRIES
    ) -> GroupEvent:
        """Add every client of each user (one claimed, verified KeyPackage per client). Our
        own user may be named to bring in our other clients."""
        group = self.group(group_id)
        present = {_client_of(group, i) for i, _, _ in group.roster()}
        kps = []
        for user_id in user_ids:
            for kp in await self.client.claim_key_packages(user_id):
                if member_client_id(kp.leaf_node.credential) not in present:
                    kps.append(kp)
        if not kps:
            raise RoostError(0, "no_key_packages", "no client to add")
        return await self._commit(group_id, lambda g: g.commit(add=kps), retries=retries)

    def leaves_of(self, group_id: bytes, user_id: str) -> list[int]:
        group = self.group(group_id)
        return [
            i for i, _, _ in group.roster() if _client_of(group, i).rpartition("/")[0] == user_id
        ]

    async def remove(
        self, group_id: bytes, user_id: str, *, retries: int = COMMIT_RETRIES
    ) -> GroupEvent:
        """Remove every client of ``user_id`` from the group (admins only, says the DS)."""

        def build(g: Group):
            leaves = [i for i, _, _ in g.roster() if _client_of(g, i).rpartition("/")[0] == user_id]
            if not leaves:
                raise RoostError(404, "user_not_member", f"{user_id} is not in the group")
            return g.commit(remove=leaves)

        return await self._commit(group_id, build, retries=retries)

    async def remove_clients(
        self, group_id: bytes, client_ids: Iterable[str], *, retries: int = COMMIT_RETRIES
    ) -> GroupEvent:
        wanted = set(client_ids)

        def build(g: Group):
            return g.commit(remove=[i for i, _, _ in g.roster() if _client_of(g, i) in wanted])

        return await self._commit(group_id, build, retries=retries)

    async def leave(self, group_id: bytes) -> int:
        """Propose our own removal (any member or admin then commits it) and forget the group
        locally. Returns the proposal's ``group_seq``."""
        async with self._lock:
            group = self.group(group_id)
            proposal = group.propose_remove(group.leaf_index)
            resp = await self.client.request(
                "POST",
                f"/v1/groups/{group_path(group_id)}/proposals",
                content=proposal,
                content_type=MLS_MEDIA_TYPE,
            )
            seq = int(resp.json().get("group_seq", 0))
            self._record(
                GroupEvent("removed", group_id, self.client.client_id, group_seq=seq, text="left")
            )
            self._forget(group_id)
        return seq

    async def set_role(self, group_id: bytes, user_id: str, role: str = "admin") -> None:
        await self.client.request(
            "PUT",
            f"/v1/groups/{group_path(group_id)}/roles/{quote(user_id, safe='@')}",
            json={"role": role},
        )

    async def promote(self, group_id: bytes, user_id: str) -> None:
        await self.set_role(group_id, user_id, "admin")

    async def set_policy(self, group_id: bytes, policy: str | None) -> None:
        await self.client.request(
            "PUT", f"/v1/groups/{group_path(group_id)}/policy", json={"policy": policy}
        )

    async def set_external_join(self, group_id: bytes, allowed: bool) -> GroupSummary:
        resp = await self.client.request(
            "PATCH", f"/v1/groups/{group_path(group_id)}", json={"external_join": allowed}
        )
        return GroupSummary.from_json(resp.json())

    async def delete(self, group_id: bytes) -> None:
        """Delete the group on the DS (admins only); members get a ``group_deleted`` notice."""
        await self.client.request("DELETE", f"/v1/groups/{group_path(group_id)}")
        async with self._lock:
            self._record(GroupEvent("notice", group_id, text="group deleted by us"))
            self._forget(group_id)

    async def group_state(self, group_id: bytes) -> tuple[bytes, bytes]:
        """The latest GroupInfo and encoded ratchet tree the DS holds for a group."""
        resp = await self.client.request("GET", f"/v1/groups/{group_path(group_id)}/group-info")
        try:
            return decode_group_state(resp.content)
        except MLSError as e:
            raise RoostError(0, "malformed_server_answer", f"group-info: {e}") from e

    async def join_external(self, group_id: bytes) -> GroupEvent:
        """Join a group that allows it by external commit."""
        from roost.mls.group import Group

        queue_id = await self._ensure_queue()
        gi, tree = await self.group_state(group_id)
        st = self.client.state
        async with self._lock:
            group, commit = await self._with_as_certificates(
                lambda: Group.join_external(
                    gi,
                    tree or None,
                    self.client.credential,
                    st.signature_private,
                    credential_policy=self.client.credential_policy(),
                )
            )
            resp = await self.client.request(
                "POST",
                f"/v1/groups/{group_path(group_id)}/commits",
                params={"queue_id": queue_id},
                content=encode_commit_bundle(commit, group.group_info(with_tree=True), None),
                content_type=MLS_MEDIA_TYPE,
            )
            self._keep(group)
            seq = int(resp.json().get("group_seq", 0))
            return self._record(
                GroupEvent(
                    "joined",
                    group_id,
                    self.client.client_id,
                    epoch=group.epoch,
                    group_seq=seq,
                    text="joined by external commit",
                )
            )

    # ---- sending -------------------------------------------------------------------------------
    async def send(
        self, group_id: bytes, data: bytes | str, *, message_id: str | None = None
    ) -> SentMessage:
        """Encrypt and send an application message; the state is saved before it leaves (a
        ratchet generation is never used twice, even after a crash)."""
        payload = data.encode() if isinstance(data, str) else data
        async with self._lock:
            group = self.group(group_id)
            ciphertext = group.encrypt(payload)
            self._keep(group)
            sent = await self.send_raw(group_id, ciphertext, message_id=message_id)
            self._record(
                GroupEvent(
                    "message",
                    group_id,
                    self.client.client_id,
                    payload,
                    group.epoch,
                    sent.group_seq,
                ),
                outgoing=True,
            )
        return sent

    async def send_raw(
        self, group_id: bytes, ciphertext: bytes, *, message_id: str | None = None
    ) -> SentMessage:
        """Send an already-encrypted PrivateMessage (e.g. retry with the same message id)."""
        mid = message_id or uuid.uuid4().hex
        resp = await self.client.request(
            "POST",
            f"/v1/groups/{group_path(group_id)}/messages",
            content=ciphertext,
            content_type=MLS_MEDIA_TYPE,
            headers={"Roost-Message-Id": mid},
        )
        return SentMessage(int(resp.json()["group_seq"]), mid, ciphertext)

    # ---- receiving -------------------------------------------------------------------------------
    async def sync(
        self, *, limit: int | None = None, auto_commit: bool = False
    ) -> list[GroupEvent]:
        """Join from any new Welcome, then process everything waiting in our group queue (in
        order) and ack it. With ``auto_commit``, proposals received (leaves, the homeserver's
        Removes) are then committed (``commit_pending``). Returns what happened, oldest first."""
        events = await self._sync(limit)
        if auto_commit:
            for gid in sorted({e.group_id for e in events if e.kind == "proposal"}):
                event = await self.commit_pending(gid)
                if event is not None:
                    events.append(event)
        return events

    async def _sync(self, limit: int | None) -> list[GroupEvent]:
        events = await self._sync_welcomes()
        if not self._cursors.queue_id:
            return events
        while True:
            page = await self.client.fetch_queue(
                self._cursors.queue_id, self._cursors.queue_after, limit=limit
            )
            async with self._lock:
                for m in page.messages:
                    if m.seq <= self._cursors.queue_after:
                        continue  # already processed (at-least-once delivery)
                    events.extend(await self._handle_payload(m.payload))
                    self._cursors.queue_after = m.seq
                self._flush()
            if page.messages:
                await self.client.ack_queue(self._cursors.queue_id, self._cursors.queue_after)
            if not page.has_more or not page.messages:
                return events

    async def handle_queue_message(self, seq: int, payload: bytes) -> list[GroupEvent]:
        """Process one item of our group queue delivered by other means (e.g. the realtime
        socket); items at or below the processed cursor are skipped (no duplicates)."""
        return await self.handle_queue_messages([(seq, payload)])

    async def handle_queue_messages(self, items: Iterable[tuple[int, bytes]]) -> list[GroupEvent]:
        """A batch of ``handle_queue_message``: the changed group states and the cursor are
        saved once, after the batch (states first, so a crash never skips an item)."""
        events: list[GroupEvent] = []
        async with self._lock:
            for seq, payload in items:
                if seq <= self._cursors.queue_after:
                    continue
                events.extend(await self._handle_payload(payload))
                self._cursors.queue_after = seq
            self._flush()
        return events

    async def _sync_welcomes(self) -> list[GroupEvent]:
        events: list[GroupEvent] = []
        while True:
            page = await self.client.fetch_direct(self._cursors.direct_after)
            for e in page.events:
                if e.type == "welcome" and e.payload:
                    event = await self._join(e.payload, e.sender or "")
                    if event is not None:
                        events.append(event)
                self._cursors.direct_after = max(self._cursors.direct_after, e.seq)
            if page.events:
                self._save_cursors()
                await self.client.ack_direct(self._cursors.direct_after)
            if not page.has_more or not page.events:
                return events

    async def _join(self, welcome: bytes, inviter: str) -> GroupEvent | None:
        try:
            group = await self._with_as_certificates(lambda: self.client.join_from_welcome(welcome))
        except RoostError as e:
            if e.code == "invalid_welcome":
                return None  # for another client of our user
            raise
        queue_id = await self._ensure_queue()
        async with self._lock:
            self._groups[group.group_id] = group
            try:
                await self.client.request(
                    "PUT",
                    f"/v1/groups/{group_path(group.group_id)}/queue",
                    json={"queue_id": queue_id},
                )
            except RoostError as e:
                if e.status not in (403, 404):
                    raise
                # Deleted, or we were removed again, before we got here: nothing to join.
                self._forget(group.group_id)
                return GroupEvent("rejected", group.group_id, inviter, text=f"stale Welcome: {e}")
            return self._record(
                GroupEvent(
                    "joined",
                    group.group_id,
                    inviter,
                    epoch=group.epoch,
                    text=f"joined (invited by {inviter})",
                )
            )

    async def _handle_payload(self, payload: bytes) -> list[GroupEvent]:
        try:
            item = QueueItem.decode(payload)
        except MLSError as e:
            return [GroupEvent("rejected", b"", text=f"undecodable queue item: {e}")]
        events = await self._handle_item(item)
        if item.policy:  # our notification policy for the group, as the DS attached it
            events = [replace(e, policy=item.policy) for e in events]
        return events

    async def _handle_item(self, item: QueueItem) -> list[GroupEvent]:
        if item.item_type == ITEM_SERVER_NOTICE:
            return [await self._handle_notice(item)]
        if item.group_id not in self._groups and item.group_id not in self.local_group_ids():
            return [
                GroupEvent(
                    "rejected",
                    item.group_id,
                    group_seq=item.group_seq,
                    text="message for a group we are not in",
                )
            ]
        group = self.group(item.group_id)
        senders_before = {i: _client_of(group, i) for i, _, _ in group.roster()}
        try:
            received = await self._with_as_certificates(lambda: group.process(item.body))
        except MLSError as e:
            return [GroupEvent("rejected", item.group_id, group_seq=item.group_seq, text=str(e))]
        sender = _sender_name(received.sender, senders_before)
        if received.kind == "application":
            self._touch(group)  # the receive ratchet moved
            return [
                self._record(
                    GroupEvent(
                        "message", item.group_id, sender, received.data, group.epoch, item.group_seq
                    )
                )
            ]
        if received.kind == "proposal":
            self._touch(group)
            return [
                GroupEvent(
                    "proposal",
                    item.group_id,
                    sender,
                    epoch=group.epoch,
                    group_seq=item.group_seq,
                    text=_proposal_text(received),
                )
            ]
        if received.removed_self:
            self._forget(item.group_id)
            return [
                self._record(
                    GroupEvent(
                        "removed",
                        item.group_id,
                        sender,
                        epoch=received.epoch,
                        group_seq=item.group_seq,
                        text=f"removed from the group by {sender}",
                    )
                )
            ]
        self._touch(group)
        after = {i: _client_of(group, i) for i, _, _ in group.roster()}
        event = GroupEvent(
            "commit",
            item.group_id,
            sender,
            epoch=group.epoch,
            group_seq=item.group_seq,
            added=tuple(after[i] for i in received.added if i in after),
            removed=tuple(senders_before.get(i, "") for i in received.removed),
        )
        return [self._record(_describe(event))]

    async def _handle_notice(self, item: QueueItem) -> GroupEvent:
        try:
            signed = SignedNotice.decode(item.body)
            suite = self._suite_of(item.group_id)
            key = await self._notice_key(item.group_id, suite)
            from roost.mls.crypto.ciphersuite import get_cipher_suite

            notice = signed.verified(get_cipher_suite(suite), key)
            if unb64u(str(notice.get("group_id", ""))) != item.group_id:
                raise ValueError("notice names another group")
        except (MLSError, ValueError, KeyError) as e:
            return GroupEvent(
                "rejected",
                item.group_id,
                group_seq=item.group_seq,
                text=f"unverified server notice: {e}",
            )
        event = GroupEvent(
            "notice",
            item.group_id,
            "",
            group_seq=item.group_seq,
            text=_notice_text(notice),
            notice=notice,
        )
        self._record(event)
        if notice["type"] == "group_deleted":
            self._forget(item.group_id)
        return event

    async def _notice_key(self, group_id: bytes, suite: int) -> bytes:
        """The key that signs a group's server notices: the external-sender key of the DS of
        the group's domain — ours, or for a group of another domain the group's external sender
        certified by that domain's AS (SAN ``roost:server:<domain>``)."""
        from cryptography import x509

        from roost.mls.constants import ExtensionType
        from roost.mls.extension_types import ExternalSenders
        from roost.mls.extensions import find_extension

        from .credentials import public_key_bytes

        domain = group_id.decode("ascii", "replace").rpartition("@")[2]
        if not domain or domain == self.client.state.home_domain:
            return (await self.server_sender(suite)).signature_key
        try:
            group = self.group(group_id)
            as_cert = await self.client.as_certificate(domain)
        except RoostError as e:
            raise ValueError(f"cannot check notices of {domain}: {e}") from None
        ext = find_extension(group.group_context.extensions, ExtensionType.EXTERNAL_SENDERS)
        senders = ExternalSenders.from_extension(ext).senders if ext is not None else ()
        for sender in senders:
            cred = sender.credential
            if cred.credential_type != CredentialType.X509 or not cred.certificates:
                continue
            try:
                leaf = verify_chain(list(cred.certificates), as_cert)
                san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            except (CredentialError, x509.ExtensionNotFound):
                continue
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
            certified = SERVER_URI_PREFIX + domain in uris
            if certified and public_key_bytes(leaf) == sender.signature_key:
                return sender.signature_key
        raise ValueError(f"the group lists no external sender certified for {domain}")

    def _suite_of(self, group_id: bytes) -> int:
        try:
            return self.group(group_id).cs.suite_id
        except RoostError:
            return self.client.state.cipher_suite

    async def listen(
        self,
        on_event: Callable[[GroupEvent], Any] | None = None,
        *,
        stop: asyncio.Event | None = None,
        realtime: bool = True,
        poll_interval: float = 1.0,
        max_backoff: float = 10.0,
        auto_commit: bool = False,
    ) -> None:
        """Process group traffic as it arrives until ``stop`` is set: pushed over the realtime
        WebSocket (reconnecting with capped backoff and resuming from the processed positions:
        no loss, no duplicates), or with ``realtime=False`` by polling every ``poll_interval``."""
        stop = stop or asyncio.Event()

        async def emit(events: list[GroupEvent]) -> None:
            if auto_commit:  # commit what was proposed (leaves, the homeserver's Removes)
                for gid in sorted({e.group_id for e in events if e.kind == "proposal"}):
                    event = await self.commit_pending(gid)
                    if event is not None:
                        events = [*events, event]
            if on_event is None:
                return
            for ev in events:
                r = on_event(ev)
                if asyncio.iscoroutine(r):
                    await r

        await emit(await self._sync(None))
        if not realtime:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=poll_interval)
                await emit(await self._sync(None))
            return
        from .realtime import _FINAL_CLOSES, Realtime, RealtimeClosed

        queue_id = await self._ensure_queue()
        backoff = 0.5
        while not stop.is_set():
            rt = Realtime(
                self.client,
                positions={queue_id: self._cursors.queue_after},
                direct=self._cursors.direct_after,
            )
            self.realtime = rt
            try:
                await rt.connect()
                backoff = 0.5
                while not stop.is_set():
                    try:
                        delivery = await rt.receive(timeout=0.25)
                    except TimeoutError:
                        continue
                    await emit(await self._handle_delivery(rt, delivery, queue_id))
            except RealtimeClosed as e:
                if e.close_code in _FINAL_CLOSES:
                    raise
                if e.close_code == 4001:
                    self.client.state.token = ""
            except RoostError as e:
                if e.code in ("token_expired", "unauthenticated"):
                    self.client.state.token = ""
                elif e.status not in (0, 429, 502, 503, 504):
                    raise
            finally:
                self.realtime = None
                await rt.close()
            if stop.is_set():
                return
            # Catch up over HTTP too (cheap when nothing waits), then reconnect.
            with contextlib.suppress(RoostError):
                await emit(await self._sync(None))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(max_backoff, backoff * 2)

    async def _handle_delivery(self, rt: Any, delivery: Any, queue_id: str) -> list[GroupEvent]:
        events: list[GroupEvent] = []
        if delivery.queue_id is None:  # the direct queue: Welcomes
            for e in delivery.direct_events():
                if e.seq <= self._cursors.direct_after:
                    continue
                if e.type == "welcome" and e.payload:
                    event = await self._join(e.payload, e.sender or "")
                    if event is not None:
                        events.append(event)
                self._cursors.direct_after = e.seq
            self._save_cursors()
            await rt.ack(direct=self._cursors.direct_after, wait=False)
        elif delivery.queue_id == queue_id:
            events += await self.handle_queue_messages(
                (m.seq, m.payload) for m in delivery.messages
            )
            await rt.ack({queue_id: self._cursors.queue_after}, wait=False)
        return events


def _sender_name(sender: Any, leaves: dict[int, str]) -> str:
    from roost.mls.constants import SenderType

    if sender.sender_type == SenderType.MEMBER:
        return leaves.get(sender.index, f"leaf {sender.index}")
    if sender.sender_type == SenderType.EXTERNAL:
        return ""  # the homeserver (our only external sender)
    return "new member"


def _proposal_text(received: Any) -> str:
    p = received.proposal
    if p is None:
        return "proposal"
    body = getattr(p, "body", p)
    return type(body).__name__.lower()


def _describe(event: GroupEvent) -> GroupEvent:
    parts = []
    if event.added:
        parts.append("added " + ", ".join(event.added))
    if event.removed:
        parts.append("removed " + ", ".join(event.removed))
    text = "; ".join(parts) or "updated keys"
    who = event.sender or "the homeserver"
    return replace(event, text=f"epoch {event.epoch}: {who} {text}")


def _notice_text(notice: dict[str, Any]) -> str:
    kind = notice.get("type")
    if kind == "group_deleted":
        return "the group was deleted"
    if kind == "display_name_changed":
        return f"{notice.get('user_id')} is now called {notice.get('display_name')!r}"
    if kind == "user_deleted":
        return f"{notice.get('user_id')} deleted their account"
    return f"notice {kind}"


__all__ = [
    "GroupEvent",
    "GroupSummary",
    "Groups",
    "SentMessage",
    "ServerSender",
    "credential_policy",
    "member_client_id",
    "new_group_id",
    "welcome_target",
]
