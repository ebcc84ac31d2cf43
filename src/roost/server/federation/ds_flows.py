"""Groups spanning domains, the Delivery-Service half (docs/federation.md, "DS flows").

A group lives on its creator's DS; its id ends in ``@<that domain>``.

- Outbound requests: ``GroupForwarder`` (raw ASGI, in front of the send fast path) answers a
  client's ``/v1/groups/{group_id}/...`` request for a group of another domain by forwarding it,
  signed, to ``/federation/v1/groups/{group_id}/...`` there, with the acting client
  (``Roost-Client``, ``Roost-User-Uuid``). A queue registration names a queue of this server:
  its ownership is checked here first. The answer (also a problem such as ``409
  epoch_conflict`` with its fields) comes back unchanged.
- The DS's side (``DsBridge``, installed as ``DeliveryService.federation``): fan-out items for
  remote members' queues and Welcomes for remote users go into the outbox in the fan-out's
  transaction (kinds ``ds.items``, ``ds.welcome``); remote AS certificates for the credential
  policy come from the directory.
- Inbox handlers: ``ds.items`` are enqueued into this server's queues (so realtime wake-ups and
  push happen here), ``ds.welcome`` into the user's direct queue.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from roost.mls.codec import Reader, Writer
from roost.mls.errors import DecodeError

from ..auth import ids
from ..delivery import wire
from ..encoding import b64u, unb64u
from ..errors import PROBLEM_MEDIA_TYPE, Problem, problem_response, unexpected_error_response
from ..queues.service import QUEUE_ID_LEN
from .as_flows import CLIENT_HEADER, USER_UUID_HEADER
from .outbox import item_json
from .transport import FederationRefused, RemoteUnavailable

if TYPE_CHECKING:
    from ..deps import Services

log = logging.getLogger("roost.federation")

ITEMS_KIND = "ds.items"
WELCOME_KIND = "ds.welcome"
FED_GROUPS = "/federation/v1/groups/"
# What one ds.items entry holds at most (always one item): well below the outbox's item limit
# and a peer's smaller body limit (an item alone is bounded by the message limit).
ITEMS_ENTRY_BYTES = 64 * 1024
_CLIENT_GROUPS = "/v1/groups/"
_GROUP_ID_RE = re.compile(rb"^[A-Za-z0-9_-]{22}@([a-z0-9.-]{1,253}(?::[0-9]{1,5})?)$")
# The group routes a client may reach on another domain's DS (delivery/routes.py), as decoded
# paths after "/v1/groups/". Anything else (dot segments above all: the outbound URL is
# normalised, so "<gid>/../../inbox" would become a request to the peer's inbox signed by this
# server) is not forwarded.
_FORWARDABLE = re.compile(
    r"[A-Za-z0-9_-]+(?:/(?:commits|group-info|queue|messages|proposals|policy"
    r"|roles/[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9.-]+))?"
)
# Request headers that travel with a forwarded request (the rest are the client's business).
_FORWARDED_HEADERS = ("roost-message-id",)


def group_domain(group_id: bytes) -> str | None:
    """The owning domain encoded in a group id, or None if it is not a Roost group id."""
    m = _GROUP_ID_RE.match(group_id)
    return m.group(1).decode() if m else None


def _path_group_domain(segment: str) -> str | None:
    try:
        raw = unb64u(segment)
    except ValueError:
        return None
    return group_domain(raw)


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


# ---- the DS's federation hooks (DeliveryService.federation) ---------------------------------


class DsBridge:
    """What the DS needs from federation: remote AS certificates and the outbox."""

    def __init__(self, s: Services) -> None:
        self.s = s

    async def as_certificate(self, domain: str) -> bytes:
        return await self.s.federation.directory.as_certificate(domain)

    async def items_in(
        self, conn: AsyncConnection, domain: str, items: list[tuple[bytes, bytes]]
    ) -> None:
        # One outbox entry per destination per fanned-out item: the outbox is FIFO per
        # destination, so each remote queue gets its items in group order. Many members on
        # one domain, or a joiner's held items, can add up to more than one entry may hold
        # (or the peer's body limit takes): then several entries, in order.
        for chunk in _chunks(items, ITEMS_ENTRY_BYTES):
            await self._enqueue(conn, domain, ITEMS_KIND, encode_items(chunk))

    async def welcome_in(
        self, conn: AsyncConnection, domain: str, user_id: str, event: bytes
    ) -> None:
        body = json.dumps({"to": user_id, "event": event.decode()}, separators=(",", ":"))
        await self._enqueue(conn, domain, WELCOME_KIND, body.encode())

    async def lock_destinations_in(self, conn: AsyncConnection, domains: set[str]) -> None:
        await self.s.federation.outbox.lock_in(conn, domains)

    async def _enqueue(self, conn: AsyncConnection, domain: str, kind: str, body: bytes) -> None:
        try:
            await self.s.federation.outbox.enqueue_in(conn, domain, kind, body)
        except FederationRefused:
            # The group's other members must not lose their copy because one member's domain
            # is no longer admitted: that member gets nothing while the policy refuses it.
            log.warning("%s for %s not queued: the federation policy refuses it", kind, domain)


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
        decoded = [wire.decode_queue_item(item) for _, item in items]
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
    """Give the DS its federation hooks and register the DS inbox kinds."""
    fed = getattr(s, "federation", None)
    if fed is None:
        return
    s.delivery.federation = DsBridge(s)

    async def on_items(conn: AsyncConnection, origin: str, body: bytes) -> None:
        await _apply_items(s, conn, origin, body)

    async def on_welcome(conn: AsyncConnection, origin: str, body: bytes) -> None:
        await _apply_welcome(s, conn, origin, body)

    fed.inbox.register(ITEMS_KIND, on_items)
    fed.inbox.register(WELCOME_KIND, on_welcome)


# ---- forwarding a client's request to the group's DS ----------------------------------------


class GroupForwarder:
    """Raw ASGI: requests on groups of other domains go to that domain's DS, signed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._home: tuple[str, str, int] | None = None  # (domain, b64u tail, segment length)

    def _home_shape(self, domain: str) -> tuple[str, str, int]:
        """How the path segment of a group id of ``domain`` ends. The 22-character random part
        and the "@" fill whole base64 groups up to the domain's first byte, so from character
        30 on the encoding depends only on "@" + domain: a local group is recognised by a
        string comparison, without decoding (this runs in front of every send)."""
        if self._home is None or self._home[0] != domain:
            sample = b64u(b"A" * 22 + b"@" + domain.encode())
            self._home = (domain, sample[30:], len(sample))
        return self._home

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        domain = self._remote_domain(scope)
        if domain is None:
            await self.app(scope, receive, send)
            return
        try:
            status, ctype, body = await self._forward(scope, receive, domain)
        except Problem as p:
            await problem_response(p.status, p.code, p.detail, p.headers, p.extra)(
                scope, receive, send
            )
            return
        except Exception as e:
            await unexpected_error_response(e)(scope, receive, send)
            return
        headers = [(b"content-length", str(len(body)).encode())]
        if ctype:
            headers.append((b"content-type", ctype.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _remote_domain(self, scope: Scope) -> str | None:
        if scope["type"] != "http":
            return None
        path: str = scope["path"]
        if not path.startswith(_CLIENT_GROUPS):
            return None
        segment = path[len(_CLIENT_GROUPS) :].split("/", 1)[0]
        services = scope["app"].state.services
        home, tail, length = self._home_shape(services.config.home_domain)
        if len(segment) == length and segment.endswith(tail):
            return None  # a group of this domain (the common case: no decoding)
        domain = _path_group_domain(segment)
        if domain is None or domain == home or getattr(services, "federation", None) is None:
            return None
        return domain

    async def _forward(self, scope: Scope, receive: Receive, domain: str) -> tuple[int, str, bytes]:
        s: Services = scope["app"].state.services
        rest: str = scope["path"][len(_CLIENT_GROUPS) :]
        if not _FORWARDABLE.fullmatch(rest):
            raise Problem(404, "not_found", "no such group route")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "unauthenticated",
                "a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        p = await s.auth.authenticate(token.strip())
        body = await _read_body(receive)
        method: str = scope["method"]
        params = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        queue_text = None
        if method == "PUT" and rest.endswith("/queue"):
            try:
                queue_text = json.loads(body).get("queue_id")
            except (ValueError, AttributeError):
                queue_text = None  # the group's DS answers the malformed request
        elif method == "POST" and rest.endswith("/commits"):
            queue_text = dict(params).get("queue_id")
        if queue_text is not None:
            await self._check_queue(s, queue_text, p.client_uuid)
        forwarded = {CLIENT_HEADER: p.client_id, USER_UUID_HEADER: p.user_uuid}
        for name in _FORWARDED_HEADERS:
            if name in headers:
                forwarded[name] = headers[name]
        # ``send``: answers below 500 come back as they are (a problem keeps all its fields,
        # e.g. the epoch of 409 epoch_conflict); 401/421 (our signature refused) become 502.
        response = await s.federation.client.send(
            domain,
            method,
            FED_GROUPS + rest,
            body=body,
            content_type=headers.get("content-type"),
            headers=forwarded,
            params=params,
        )
        ctype = response.headers.get("content-type", "")
        if response.status_code >= 400 and not ctype.startswith(PROBLEM_MEDIA_TYPE):
            raise RemoteUnavailable(domain, f"answered {response.status_code} without a problem")
        return response.status_code, ctype, response.content

    async def _check_queue(self, s: Services, queue_text: object, client_uuid: str) -> None:
        """The queue a remote DS will deliver to must be this client's queue here."""
        try:
            qid = unb64u(queue_text) if isinstance(queue_text, str) else b""
        except ValueError:
            qid = b""
        if len(qid) != QUEUE_ID_LEN:
            raise Problem(404, "queue_not_found", "no such queue")
        async with s.queues.db.engine.connect() as conn:
            await s.queues.check_owner(conn, qid, client_uuid)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Problem(400, "invalid_request", "the client went away")
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)
