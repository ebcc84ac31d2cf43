"""Groups spanning domains, the Delivery-Service half (docs/federation.md, "DS flows").

A group lives on its creator's DS; its id ends in ``@<that domain>``.

- Outbound requests: ``group_forwarder.py`` forwards a client's request on a group of another
  domain to that domain's DS.
- The DS's side (``DsBridge``, given to ``DeliveryService`` at construction by
  ``app.build_services``; it implements ``delivery.federation_port.DsFederation``): fan-out
  items for remote members' queues and Welcomes for remote users go into the outbox in the
  fan-out's transaction (kinds ``ds.items``, ``ds.welcome``); remote AS certificates for the
  credential checks come from the directory; the domains the operator forgot come from the
  policy (the DS removes their members from its groups).
- Inbox handlers: ``ds.items`` are enqueued into this server's queues (so realtime wake-ups and
  push happen here), ``ds.welcome`` into the user's direct queue.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING

from roost.mls.codec import Reader, Writer
from roost.mls.errors import DecodeError
from roost.protocol.base64url import unb64u
from roost.protocol.queue_item import decode_queue_item

from ..auth import ids
from ..errors import Problem
from ..queues.service import QUEUE_ID_LEN
from ..store.async_engine import AsyncConnection
from .directory import RemoteDirectory
from .outbox import Outbox, item_json
from .policy import FederationPolicyStore
from .transport import FederationRefused

if TYPE_CHECKING:
    from ..deps import Services

log = logging.getLogger("roost.federation")

ITEMS_KIND = "ds.items"
WELCOME_KIND = "ds.welcome"
# What one ds.items entry holds at most (always one item): well below the outbox's item limit
# and a peer's smaller body limit (an item alone is bounded by the message limit).
ITEMS_ENTRY_BYTES = 64 * 1024
_GROUP_ID_RE = re.compile(rb"^[A-Za-z0-9_-]{22}@([a-z0-9.-]{1,253}(?::[0-9]{1,5})?)$")


def group_domain(group_id: bytes) -> str | None:
    """The owning domain encoded in a group id, or None if it is not a Roost group id."""
    m = _GROUP_ID_RE.match(group_id)
    return m.group(1).decode() if m else None


# ---- ds.items wire: a sequence of (queue id, RoostQueueItem), in order ----------------------


def encode_items(items: list[tuple[bytes, bytes]]) -> bytes:
    w = Writer()
    for queue_id, item in items:
        w.opaque(queue_id)
        w.opaque(item)
    return w.getvalue()


def decode_items(body: bytes) -> list[tuple[bytes, bytes]]:
    r = Reader(body)
    out: list[tuple[bytes, bytes]] = []
    while r.remaining():
        out.append((r.opaque(), r.opaque()))
    r.finish()
    return out


def _chunks(items: list[tuple[bytes, bytes]], limit: int) -> list[list[tuple[bytes, bytes]]]:
    """``items`` in order, cut into runs whose encoding stays within ``limit`` bytes (an item
    larger than that alone, for the outbox to refuse)."""
    out: list[list[tuple[bytes, bytes]]] = [[]]
    size = 0
    for qid, item in items:
        n = len(encode_items([(qid, item)]))
        if out[-1] and size + n > limit:
            out.append([])
            size = 0
        out[-1].append((qid, item))
        size += n
    return out


# ---- the DS's federation bridge (given to DeliveryService by build_services) ------------------


class DsBridge:
    """What the DS needs from federation: remote AS certificates, the outbox and the domains
    the operator forgot."""

    def __init__(
        self, directory: RemoteDirectory, outbox: Outbox, policy: FederationPolicyStore
    ) -> None:
        self.directory = directory
        self.outbox = outbox
        self.policy = policy

    async def as_certificate(self, domain: str) -> bytes:
        return await self.directory.as_certificate(domain)

    async def forgotten_domains(self) -> frozenset[str]:
        return (await self.policy.load()).forgotten

    async def items_in(
        self, conn: AsyncConnection, domain: str, group_id: bytes, items: list[tuple[bytes, bytes]]
    ) -> None:
        # One outbox entry per destination per fanned-out item: the outbox is FIFO per
        # destination, so each remote queue gets its items in group order. Many members on
        # one domain, or a joiner's held items, can add up to more than one entry may hold
        # (or the peer's body limit takes): then several entries, in order.
        for chunk in _chunks(items, ITEMS_ENTRY_BYTES):
            await self._enqueue(conn, domain, ITEMS_KIND, encode_items(chunk), group_id)

    async def items_in_transit(self, conn: AsyncConnection, domain: str, group_id: bytes) -> bool:
        return await self.outbox.in_transit_in(conn, domain, group_id)

    async def welcome_in(
        self, conn: AsyncConnection, domain: str, user_id: str, event: bytes
    ) -> None:
        body = json.dumps({"to": user_id, "event": event.decode()}, separators=(",", ":"))
        await self._enqueue(conn, domain, WELCOME_KIND, body.encode())

    async def lock_destinations_in(self, conn: AsyncConnection, domains: set[str]) -> None:
        await self.outbox.lock_in(conn, domains)

    async def _enqueue(
        self, conn: AsyncConnection, domain: str, kind: str, body: bytes, ref: bytes | None = None
    ) -> None:
        # A domain the policy does not admit now gets its items held in the outbox (sent in
        # order once admitted); only a forgotten domain's are refused: its members are leaving
        # the group, and the others must not lose their copy.
        try:
            await self.outbox.enqueue_in(conn, domain, kind, body, ref)
        except FederationRefused:
            log.info("%s for %s discarded: the operator forgot that domain", kind, domain)


# ---- inbox handlers (the member's server) ---------------------------------------------------


def _runs(items: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
    """Consecutive runs with distinct queues (one multi-row enqueue each), order kept."""
    runs: list[list[tuple[bytes, bytes]]] = []
    seen: set[bytes] = set()
    for qid, item in items:
        if not runs or qid in seen:
            runs.append([])
            seen = set()
        runs[-1].append((qid, item))
        seen.add(qid)
    return runs


async def _apply_items(s: Services, conn: AsyncConnection, origin: str, body: bytes) -> None:
    try:
        items = decode_items(body)
        decoded = [decode_queue_item(item) for _, item in items]
    except DecodeError:
        raise Problem(400, "invalid_request", "malformed ds.items") from None
    for (qid, _), item in zip(items, decoded, strict=True):
        if len(qid) != QUEUE_ID_LEN:
            raise Problem(400, "invalid_request", "malformed queue id in ds.items")
        # A DS delivers only items of its own groups.
        if group_domain(item.group_id) != origin:
            raise Problem(403, "forbidden", "ds.items for a group of another domain")
    for run in _runs(items):
        await s.queues.enqueue_many_in(conn, run)  # unknown (deleted) queues are skipped


async def _apply_welcome(s: Services, conn: AsyncConnection, origin: str, body: bytes) -> None:
    try:
        d = item_json(body)
        to, event_text = d["to"], d["event"]
        event = item_json(event_text)
        group_id = unb64u(event["group_id"])
        sender = event["from"]
    except (ValueError, KeyError, TypeError):
        raise Problem(400, "invalid_request", "malformed ds.welcome") from None
    if not isinstance(to, str) or not isinstance(sender, str) or event.get("type") != "welcome":
        raise Problem(400, "invalid_request", "malformed ds.welcome")
    if group_domain(group_id) != origin:
        raise Problem(403, "forbidden", "a Welcome for a group of another domain")
    user = await s.auth.find_user(to, conn)
    if user is None:
        raise Problem(404, "user_not_found", f"no user {to}")
    # The inviter must be this user or connected to them, as for a local Welcome.
    parsed = ids.parse_user_id(sender)
    if parsed is None:
        raise Problem(400, "invalid_request", "malformed ds.welcome")
    if parsed[1] == s.config.home_domain:
        inviter = await s.auth.find_user(sender, conn)
        inviter_uuid = inviter.uuid if inviter else None
    else:
        inviter_uuid = await s.connections.remote_user_uuid(conn, sender)
    if inviter_uuid is None or (
        inviter_uuid != user.uuid
        and not await s.connections.is_connected(conn, inviter_uuid, user.uuid)
    ):
        raise Problem(403, "no_connection", f"{sender} is not connected to {to}")
    await s.queues.enqueue_direct(conn, user.uuid, event_text.encode())


def install_ds_flows(s: Services) -> None:
    """Register the DS inbox kinds (the DS itself got its ``DsBridge`` at construction)."""
    fed = getattr(s, "federation", None)
    if fed is None:
        return

    async def on_items(conn: AsyncConnection, origin: str, body: bytes) -> None:
        await _apply_items(s, conn, origin, body)

    async def on_welcome(conn: AsyncConnection, origin: str, body: bytes) -> None:
        await _apply_welcome(s, conn, origin, body)

    fed.inbox.register(ITEMS_KIND, on_items)
    fed.inbox.register(WELCOME_KIND, on_welcome)
