"""Authentication-Service flows across domains (docs/federation.md, "AS flows").

Outbound: discovery, AS certificates, connection opening and KeyPackage claims are forwarded
synchronously (signed) to the user's home server; connection requests, answers and direct
messages travel through the durable outbox. These are the narrow interfaces the AS-side modules
define for users of other domains (``RemoteAccounts``, ``RemoteClaims``,
``RemoteConnectionsBridge``), handed to their services at construction by ``build_services``.
Inbound: the inbox handlers below apply those items. A remote server speaks only for its own users: every user id it sends must be of its
(verified) domain, and the user uuid it reports must not name anybody else.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from roost.protocol.base64url import unb64u
from roost.protocol.key_package_batch import mls_vector_reader
from roost.protocol.media_types import MLS_MEDIA_TYPE
from roost.protocol.user_id import canonical_user_id

from ..auth import ids
from ..auth.public import PublicClient, PublicUser
from ..auth.schemas import ClientsOut, DirectoryOut, UserOut
from ..auth.service import Principal
from ..config import is_valid_domain
from ..errors import Problem
from ..group_key_wrap import GROUP_KEY_WRAP_FIELD, group_key_wrap_param
from ..store.async_engine import AsyncConnection
from .directory import RemoteDirectory
from .outbox import Outbox, item_json
from .transport import FederationClient, RemoteUnavailable

if TYPE_CHECKING:
    from ..connections.service import ConnectionService
    from ..deps import Services

CLIENT_HEADER = "Roost-Client"
USER_UUID_HEADER = "Roost-User-Uuid"
FED_PREFIX = "/federation/v1"
DIRECTORY_PATH = f"{FED_PREFIX}/directory"
# The most of a remote directory answer that is read: an entry is at most a user id (320), a
# uuid and a display name of 128 characters (at most 6 bytes each, escaped), with its keys.
DIRECTORY_ENTRY_BYTES = 2048
DIRECTORY_CURSOR_MAX = 64
DISPLAY_NAME_MAX = 128
# A remote's own refusals a client may act on; any other 4xx answer to a well-formed search
# is the remote's failure, not the client's.
_DIRECTORY_PASSED = ("federation_refused", "rate_limited")


def user_domain(user_id: str) -> str:
    parsed = ids.parse_user_id(user_id)
    if parsed is None:
        raise Problem(404, "user_not_found", f"no user {user_id}")
    return parsed[1]


def speaks_for(origin: str, user_id: str) -> str:
    """``user_id`` normalised, if it is a user of ``origin``; else 403 forbidden."""
    parsed = ids.parse_user_id(user_id)
    if parsed is None or parsed[1] != origin:
        raise Problem(403, "forbidden", "a server speaks only for its own users")
    return ids.user_id(*parsed)


def user_path(user_id: str) -> str:
    return f"{FED_PREFIX}/users/{quote(canonical_user_id(user_id), safe='@')}"


def principal_headers(p: Principal) -> dict[str, str]:
    return {CLIENT_HEADER: p.client_id, USER_UUID_HEADER: p.user_uuid}


def _broken(domain: str, what: str) -> RemoteUnavailable:
    return RemoteUnavailable(domain, f"answered a malformed {what}")


async def _json(client: FederationClient, domain: str, method: str, path: str, **kw: Any) -> Any:
    """A forwarded call; the remote's authentication failures are ours, not the client's."""
    try:
        return await client.json(domain, method, path, **kw)
    except Problem as e:
        if e.status in (401, 421):
            raise RemoteUnavailable(domain, f"refused our request ({e.code})") from None
        raise


def _model(model: type[BaseModel], data: Any, domain: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError:
        raise _broken(domain, model.__name__) from None


# ---- discovery (AuthService.remote) ---------------------------------------------------------


class RemoteAccounts:
    """``RemoteUsers`` of the AS (auth/public.py): users, clients and AS certificates of other
    domains, asked of their servers (same shapes as local answers)."""

    def __init__(self, client: FederationClient, directory: RemoteDirectory) -> None:
        self.client = client
        self.directory = directory

    async def user(self, user_id: str) -> PublicUser:
        domain = user_domain(user_id)
        out = _model(UserOut, await _json(self.client, domain, "GET", user_path(user_id)), domain)
        if speaks_for(domain, out.user_id) != canonical_user_id(user_id):
            raise _broken(domain, "user (another user id)")
        return PublicUser(out.user_id, out.user_uuid, out.display_name)

    async def clients(self, user_id: str) -> list[PublicClient]:
        domain = user_domain(user_id)
        wanted = canonical_user_id(user_id)
        data = await _json(self.client, domain, "GET", user_path(user_id) + "/clients")
        out = _model(ClientsOut, data, domain)
        clients = []
        for c in out.clients:
            parsed = ids.parse_client_id(c.client_id)
            if parsed is None or ids.user_id(parsed[0], parsed[1]) != wanted:
                raise _broken(domain, "client list (a client of another user)")
            try:
                key, credential = unb64u(c.signature_key), tuple(unb64u(x) for x in c.credential)
            except ValueError:
                raise _broken(domain, "client list (not base64url)") from None
            clients.append(
                PublicClient(
                    c.client_id, c.client_uuid, c.cipher_suite, key, credential, c.created_at
                )
            )
        return clients

    async def as_certificate(self, domain: str) -> bytes:
        """From the directory's cache of the domain's well-known document."""
        domain = domain.strip().lower()
        if not is_valid_domain(domain):
            raise Problem(400, "invalid_request", "not a valid domain name")
        # The directory applies the policy (403 federation_refused) before fetching anything.
        return await self.directory.as_certificate(domain)

    async def search(
        self, domain: str, q: str, limit: int, cursor: str | None
    ) -> tuple[list[PublicUser], str | None]:
        """The domain's opt-in directory search (signed ``GET /federation/v1/directory``). The
        peer is untrusted: its answer is read up to a bound for ``limit`` entries, and every
        entry must be a user of that domain, at most ``limit`` of them."""
        params = {"q": q, "limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        bound = 1024 + limit * DIRECTORY_ENTRY_BYTES  # a peer cannot make us buffer more
        try:
            data = await _json(
                self.client, domain, "GET", DIRECTORY_PATH, params=params, max_bytes=bound
            )
        except Problem as e:
            if isinstance(e, RemoteUnavailable) or e.code in _DIRECTORY_PASSED:
                raise
            raise RemoteUnavailable(domain, f"refused the search ({e.status} {e.code})") from None
        out = _model(DirectoryOut, data, domain)
        if len(out.users) > limit:
            raise _broken(domain, "directory answer (too many users)")
        if out.next_cursor is not None and not 0 < len(out.next_cursor) <= DIRECTORY_CURSOR_MAX:
            raise _broken(domain, "directory answer (cursor)")
        users = []
        for u in out.users:
            parsed = ids.parse_user_id(u.user_id)
            if parsed is None or parsed[1] != domain:
                raise _broken(domain, "directory answer (a user of another domain)")
            if not ids.is_uuid(u.user_uuid):
                raise _broken(domain, "directory answer (user uuid)")
            if u.display_name is not None and len(u.display_name) > DISPLAY_NAME_MAX:
                raise _broken(domain, "directory answer (display name)")
            users.append(PublicUser(ids.user_id(*parsed), u.user_uuid.lower(), u.display_name))
        return users, out.next_cursor


# ---- KeyPackage claims (KeyPackageService.remote) -------------------------------------------


class RemoteClaims:
    """``RemoteClaims`` of the KeyPackage service: claims for users of other domains."""

    def __init__(self, client: FederationClient, connections: ConnectionService) -> None:
        self.client = client
        self.connections = connections

    async def claim(
        self, principal: Principal, user_id: str, cipher_suite: int, client_uuid: str | None = None
    ) -> bytes:
        """Our claim rule first (it may use the opening request's one claim), then the
        target's server checks its own; if that fails, the claim is given back. With
        ``client_uuid``: that one client's package (the target's server knows its clients).
        An answer with no package gives the claim back too: nothing was taken."""
        domain = user_domain(user_id)
        connections = self.connections
        async with connections.db.transaction() as conn:
            target = await connections.remote_user_uuid(conn, user_id)
            if target is None:
                raise Problem(403, "no_connection", "KeyPackages are only given to connected users")
            spent = await connections.authorize_claim(conn, principal.user_uuid, target)
        try:
            response = await self.client.request(
                domain,
                "POST",
                user_path(user_id) + _claim_suffix(client_uuid),
                params={"cipher_suite": str(cipher_suite)},
                headers=principal_headers(principal),
            )
            ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != MLS_MEDIA_TYPE:
                raise _broken(domain, "claim answer (media type)")
            try:
                handed_out = mls_vector_reader(response.content).remaining()
            except Exception:
                raise _broken(domain, "claim answer (not an MLS vector)") from None
        except Exception as e:
            await connections.release_claim(principal.user_uuid, target)
            if isinstance(e, Problem) and e.status in (401, 421):
                raise RemoteUnavailable(domain, f"refused our request ({e.code})") from None
            raise
        if spent and not handed_out:
            await connections.release_claim(principal.user_uuid, target)
        return bytes(response.content)


def _claim_suffix(client_uuid: str | None) -> str:
    if client_uuid is None:
        return "/keypackages/claim"
    return f"/clients/{quote(client_uuid, safe='')}/keypackages/claim"


# ---- connections (ConnectionService.remote) -------------------------------------------------


class RemoteConnectionsBridge:
    """``RemoteConnections`` of the connection service: opens connections on the responder's
    server and relays requests, answers and direct messages through the outbox."""

    def __init__(self, client: FederationClient, outbox: Outbox) -> None:
        self.client = client
        self.outbox = outbox

    async def open(self, principal: Principal, to: str, connection_id: str) -> tuple[str, str]:
        domain = user_domain(to)
        payload = {
            "connection_id": connection_id,
            "requester": principal.user_id,
            "requester_uuid": principal.user_uuid,
            "responder": to,
        }
        d = await _json(
            self.client,
            domain,
            "POST",
            f"{FED_PREFIX}/connections",
            payload=payload,
            headers=principal_headers(principal),
        )
        if not isinstance(d, dict):
            raise _broken(domain, "connection answer")
        responder, responder_uuid = d.get("responder"), d.get("responder_uuid")
        if not isinstance(responder, str) or not isinstance(responder_uuid, str):
            raise _broken(domain, "connection answer")
        if speaks_for(domain, responder) != to or not ids.is_uuid(responder_uuid):
            raise _broken(domain, "connection answer (another user)")
        return responder_uuid, responder

    async def relay(self, conn: AsyncConnection, to: str, kind: str, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        await self.outbox.enqueue_in(conn, user_domain(to), kind, data)


async def check_remote_uuid(
    s: Services, conn: AsyncConnection, user_uuid: str, user_id: str
) -> None:
    """A uuid a remote server reports for its user must not name a local user or another
    remote user (``ConnectionService.check_remote_uuid``)."""
    await s.connections.check_remote_uuid(conn, user_uuid, user_id)


# ---- inbox handlers (inbound) ---------------------------------------------------------------


def _item(body: bytes, *fields: str) -> dict[str, Any]:
    d = item_json(body)
    if not isinstance(d, dict) or any(not isinstance(d.get(f), str) for f in fields):
        raise Problem(400, "invalid_request", f"the item needs the string fields {fields}")
    if "payload" in d and not isinstance(d["payload"], str):
        raise Problem(400, "invalid_request", "payload must be b64u text")
    return d


def _payload(d: dict[str, Any]) -> bytes | None:
    if d.get("payload") is None:
        return None
    try:
        return unb64u(d["payload"])
    except ValueError:
        raise Problem(400, "invalid_request", "payload is not b64u") from None


def _local(s: Services, user_id: str) -> str:
    parsed = ids.parse_user_id(user_id)
    if parsed is None or parsed[1] != s.config.home_domain:
        raise Problem(404, "user_not_found", f"{user_id} is not a user of this server")
    return ids.user_id(*parsed)


def install_as_flows(s: Services) -> None:
    """Register the handlers of the AS's inbox items (connections, direct messages)."""
    fed = getattr(s, "federation", None)
    if fed is None:
        return
    connections = s.connections

    async def on_request(conn: AsyncConnection, origin: str, body: bytes) -> None:
        d = _item(body, "connection_id", "from", "to", "payload")
        _local(s, d["to"])
        requester = speaks_for(origin, d["from"])
        wrap_text = d.get(GROUP_KEY_WRAP_FIELD)
        if wrap_text is not None and not isinstance(wrap_text, str):
            raise Problem(400, "invalid_request", "group_key_wrap is not b64u")
        wrap = group_key_wrap_param(wrap_text)
        await connections.receive_request(
            conn, d["connection_id"], requester, _payload(d) or b"", wrap
        )

    def on_answer(accept: bool):  # type: ignore[no-untyped-def]
        async def handler(conn: AsyncConnection, origin: str, body: bytes) -> None:
            d = _item(body, "connection_id", "from", "to")
            _local(s, d["to"])
            responder = speaks_for(origin, d["from"])
            await connections.receive_answer(
                conn, d["connection_id"], responder, accept, _payload(d)
            )

        return handler

    async def on_direct(conn: AsyncConnection, origin: str, body: bytes) -> None:
        d = _item(body, "from", "to", "payload")
        sender = speaks_for(origin, d["from"])
        await connections.receive_direct(conn, sender, _local(s, d["to"]), _payload(d) or b"")

    fed.inbox.register("conn.request", on_request)
    fed.inbox.register("conn.accept", on_answer(True))
    fed.inbox.register("conn.reject", on_answer(False))
    fed.inbox.register("direct.message", on_direct)
