"""A raw-ASGI fast path for the hottest route, ``POST /v1/groups/{group_id}/messages``.

Same contract as the FastAPI route in ``routes.py`` (which stays for the OpenAPI document and
is reached by every other request): routing, dependency solving and response models cost about
as much CPU per send as the database work, so this middleware answers the send itself.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Receive, Scope, Send

from roost.mls.errors import DecodeError

from ..encoding import MLS_MEDIA_TYPE
from ..errors import Problem, problem_response
from .routes import _group_id

log = logging.getLogger("roost.server")

_PREFIX = "/v1/groups/"
TOKEN_CACHE_SIZE = 10_000
# A cached token is re-checked against the database after this many seconds (app clock), so
# an expiring token is honoured here at most this long after its expiry. Removed clients and
# deleted users are evicted at once (AS hooks, and again after their transaction commits).
TOKEN_CACHE_SECONDS = 5.0
_SUFFIX = "/messages"


def _is_send(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return False
    middle = path[len(_PREFIX) : -len(_SUFFIX)]
    return bool(middle) and "/" not in middle


class TokenCache:
    """Bounded bearer token -> Principal cache for the send path."""

    def __init__(self, auth, clock) -> None:  # type: ignore[no-untyped-def]
        self.auth = auth
        self.clock = clock
        self._map: OrderedDict[str, tuple[object, float]] = OrderedDict()
        auth.on_client_removed.append(self._client_removed)
        auth.on_user_deleted.append(self._user_deleted)

    async def authenticate(self, token: str):  # type: ignore[no-untyped-def]
        now = self.clock()
        hit = self._map.get(token)
        if hit is not None and now - hit[1] < TOKEN_CACHE_SECONDS:
            return hit[0]
        principal = await self.auth.authenticate(token)  # raises 401 problems
        self._map[token] = (principal, now)
        self._map.move_to_end(token)
        if len(self._map) > TOKEN_CACHE_SIZE:
            self._map.popitem(last=False)
        return principal

    def evict_clients(self, client_uuids: set[str]) -> None:
        for token in [t for t, (p, _) in self._map.items() if p.client_uuid in client_uuids]:  # type: ignore[attr-defined]
            self._map.pop(token, None)

    async def _client_removed(self, conn, client_uuid: str) -> None:  # type: ignore[no-untyped-def]
        self._evict_now_and_after_commit(conn, {client_uuid})

    async def _user_deleted(self, conn, user_uuid: str, client_uuids: list[str]) -> None:  # type: ignore[no-untyped-def]
        self._evict_now_and_after_commit(conn, set(client_uuids))

    def _evict_now_and_after_commit(self, conn, client_uuids: set[str]) -> None:  # type: ignore[no-untyped-def]
        from ..store.engine import after_commit

        self.evict_clients(client_uuids)
        # A request that authenticated before the deletion committed may have re-cached it.
        after_commit(conn, lambda: self.evict_clients(client_uuids))


class SendFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._tokens: TokenCache | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_send(scope):
            await self.app(scope, receive, send)
            return
        try:
            status, body = await self._handle(scope, receive)
        except Problem as p:
            await problem_response(p.status, p.code, p.detail, p.headers, p.extra)(
                scope, receive, send
            )
            return
        except DecodeError as e:
            await problem_response(400, "malformed_mls", f"malformed MLS data: {e}")(
                scope, receive, send
            )
            return
        except IntegrityError as e:
            log.warning("integrity conflict: %s", type(e.orig).__name__)
            await problem_response(409, "conflict", "a concurrent change conflicted; retry")(
                scope, receive, send
            )
            return
        except Exception as e:
            log.exception("internal error: %s", type(e).__name__)
            await problem_response(500, "internal_error", "internal server error")(
                scope, receive, send
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        services = scope["app"].state.services
        token = ctype = message_id = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = value.decode("latin-1")
            elif name == b"content-type":
                ctype = value.decode("latin-1")
            elif name == b"roost-message-id":
                message_id = value.decode("latin-1")
        scheme, _, credentials = (token or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Problem(
                401,
                "unauthenticated",
                "a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if self._tokens is None or self._tokens.auth is not services.auth:
            self._tokens = TokenCache(services.auth, services.delivery.clock)
        principal = await self._tokens.authenticate(credentials.strip())
        gid = _group_id(scope["path"][len(_PREFIX) : -len(_SUFFIX)])
        if message_id is None or not 1 <= len(message_id) <= 128:
            raise Problem(
                400,
                "invalid_request",
                "the Roost-Message-Id header (1-128 characters) is required",
                extra={"errors": [{"loc": ["header", "roost-message-id"], "msg": "required"}]},
            )
        limit = services.config.limits.max_message_bytes
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Problem(400, "invalid_request", "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Problem(413, "body_too_large", f"the message exceeds {limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if (ctype or "").split(";")[0].strip().lower() != MLS_MEDIA_TYPE:
            raise Problem(415, "unsupported_media_type", f"the body must be {MLS_MEDIA_TYPE}")
        if not payload:
            raise Problem(400, "malformed_mls", "the body is empty")
        seq = await services.delivery.send(principal, gid, message_id, payload)
        return 201, b'{"group_seq":%d}' % seq
