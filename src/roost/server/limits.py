"""ASGI middleware capping request bodies (declared length and streamed bytes).

Both answer ``413 body_too_large`` before any route runs: a body without ``Content-Length``
(chunked) is read up to the cap here and replayed, so an over-limit stream is refused alike
whatever parses it (a route or the framework's JSON parser, which would turn an error raised
mid-stream into a 400 or 500).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import problem_response


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_bytes: int, exempt_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # routes that stream big bodies and enforce their own cap while reading (asset upload)
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._reject(scope, receive, send)
                    return
                # The server stops reading at the declared length: the cap holds.
                await self.app(scope, receive, send)
                return
        messages = await self._read_capped(receive)
        if messages is None:
            await self._reject(scope, receive, send)
            return
        await self.app(scope, _replaying(messages, receive), send)

    async def _read_capped(self, receive: Receive) -> list[Message] | None:
        """The body's messages up to its end (or a disconnect); None past ``max_bytes``."""
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, "body_too_large", f"the body exceeds {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
