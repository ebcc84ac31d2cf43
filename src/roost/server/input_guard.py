"""ASGI middleware refusing text that no database column can hold, before any route sees it.

PostgreSQL's ``text`` cannot store NUL, and neither engine can store a lone surrogate or bytes
that are not UTF-8. Left to the routes, such input became a 500 on PostgreSQL (asyncpg
``CharacterNotInRepertoireError``) while SQLite stored it: the engines disagreed. One check at
request parsing covers every route alike: the path, the query string and JSON bodies. Binary
bodies (``message/mls``, asset blobs) are opaque bytes and pass untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import problem_response

# Cheap pre-filter: a JSON body is parsed a second time only when it may hold a bad string.
_SUSPECT_JSON = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]")


def is_storable_bytes(raw: bytes) -> bool:
    """UTF-8 without NUL (strict: encoded surrogates are not UTF-8 either)."""
    if b"\x00" in raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _query_parts(query: bytes) -> Iterator[bytes]:
    for pair in query.split(b"&"):
        for part in pair.split(b"=", 1):
            yield unquote_to_bytes(part.replace(b"+", b" "))


def _json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _json_strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)


def is_storable_json(body: bytes) -> bool:
    """False for a JSON body with a string (or key) holding NUL or a lone surrogate, which
    only ``\\u`` escapes can smuggle in. A body that is not JSON (raw NUL, bytes that are not
    UTF-8, another format under the wrong media type) is left to the route's own validation,
    which answers 400 ``invalid_request`` or 415 already."""
    if not _SUSPECT_JSON.search(body):
        return True
    try:
        parsed = json.loads(body)
    except ValueError:
        return True
    return all(is_storable_text(s) for s in _json_strings(parsed))


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return True  # FastAPI reads a body without a content type as JSON


class InputGuardMiddleware:
    """400 ``invalid_request`` for NUL, lone surrogates or non-UTF-8 in path, query or JSON.

    ``max_bytes``: JSON bodies are buffered for the check up to this size (the body cap); a
    larger body is passed on unchecked, for the route's own size check to refuse.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
        parts = [unquote_to_bytes(raw_path), *_query_parts(scope.get("query_string", b""))]
        if not all(is_storable_bytes(p) for p in parts):
            await self._refuse(scope, receive, send)
            return
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body, replay = await self._read_body(receive)
        if replay is None and not is_storable_json(body):
            await self._refuse(scope, receive, send)
            return
        await self.app(scope, replay or _replaying(body, receive), send)

    async def _read_body(self, receive: Receive) -> tuple[bytes, Receive | None]:
        """The whole body; or, past ``max_bytes`` (or on a disconnect), a receive that replays
        what was read and then streams the rest unchecked."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", _replaying_messages([message], receive)
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None
            if size > self.max_bytes:
                first: Message = {"type": "http.request", "body": b"".join(chunks)}
                first["more_body"] = True
                return b"", _replaying_messages([first], receive)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = problem_response(
            400,
            "invalid_request",
            "the request holds a NUL character or text that is not valid UTF-8",
        )
        await response(scope, receive, send)


def _replaying(body: bytes, receive: Receive) -> Receive:
    return _replaying_messages(
        [{"type": "http.request", "body": body, "more_body": False}], receive
    )


def _replaying_messages(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
