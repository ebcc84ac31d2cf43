"""A raw-ASGI fast path for the hottest route, ``POST /v1/groups/{group_id}/messages``.

Same contract as the FastAPI route in ``routes.py`` (which stays for the OpenAPI document and
is reached by every other request): routing, dependency solving and response models cost about
as much CPU per send as the database work, so this middleware answers the send itself.
"""

from __future__ import annotations

import logging

import asyncpg
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Receive, Scope, Send

from roost.mls.errors import DecodeError

from ..auth.token_cache import token_cache
from ..encoding import MLS_MEDIA_TYPE
from ..errors import Problem, problem_response, unexpected_error_response
from .routes import _group_id

log = logging.getLogger("roost.server")

_PREFIX = "/v1/groups/"
_SUFFIX = "/messages"


def _is_send(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return False
    middle = path[len(_PREFIX) : -len(_SUFFIX)]
    return bool(middle) and "/" not in middle


class SendFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
        except (IntegrityError, asyncpg.IntegrityConstraintViolationError) as e:
            # The PostgreSQL send statements run on the driver (store/pg_driver.py).
            log.warning("integrity conflict: %s", type(getattr(e, "orig", e)).__name__)
            await problem_response(409, "conflict", "a concurrent change conflicted; retry")(
                scope, receive, send
            )
            return
        except Exception as e:
            await unexpected_error_response(e)(scope, receive, send)
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
        # The process's shared, revocation-aware cache (auth/token_cache.py).
        principal = await token_cache(services.auth).authenticate(credentials.strip())
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
