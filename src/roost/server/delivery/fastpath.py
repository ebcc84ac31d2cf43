"""A raw-ASGI fast path for the hottest route, ``POST /v1/groups/{group_id}/messages``.

Every such request is answered here: routing, dependency solving and response models cost
about as much CPU per send as the database work. The FastAPI route in ``routes.py`` is declared
for the OpenAPI document; both parse the request with ``sends.parse_send`` and answer alike
(``tests/server/test_delivery_send_route.py`` compares them).
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Receive, Scope, Send

from roost.mls.errors import DecodeError

from ..auth.token_cache import token_cache
from ..errors import Problem, problem_response, unexpected_error_response
from ..store.pg_driver import driver_integrity_errors
from .group_key import group_key_param
from .sends import body_too_large, check_send_body, parse_send_head

log = logging.getLogger("roost.server")

_PREFIX = "/v1/groups/"
_SUFFIX = "/messages"


def _integrity_errors() -> tuple[type[Exception], ...]:
    # Evaluated only when an exception propagates: the success path pays nothing.
    return (IntegrityError, *driver_integrity_errors())


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
        except _integrity_errors() as e:
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
        token = ctype = message_id = group_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = value.decode("latin-1")
            elif name == b"roost-group-key":
                group_key = value.decode("latin-1")
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
        # The checks of sends.parse_send, split around the streamed body read.
        group_id, message_id = parse_send_head(
            scope["path"][len(_PREFIX) : -len(_SUFFIX)], message_id
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
            if size > limit:  # stop reading
                raise body_too_large(limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        check_send_body(ctype, payload, limit)
        seq = await services.delivery.send(
            principal, group_id, message_id, payload, group_key_param(group_key)
        )
        return 201, b'{"group_seq":%d}' % seq
