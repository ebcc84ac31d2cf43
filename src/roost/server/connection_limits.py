"""HTTP/1.1 connection deadlines and a cap on open connections, for ``roost serve``.

uvicorn closes an idle keep-alive connection after a response, but nothing else: a client that
connects and sends nothing, or sends its headers or body one byte at a time (slowloris), holds a
connection (and a file descriptor) for ever. This protocol, uvicorn's httptools protocol plus
timers, cuts such clients off and refuses connections beyond a cap with a 503. The settings live
in ``Limits`` (config.py); docs/operations.md, "Connection limits", explains them.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import Limits

log = logging.getLogger("roost.server")

# A large upload on a slow link is not an attack: each 64 KiB declared buys one more second.
BODY_BYTES_PER_EXTRA_SECOND = 64 * 1024
_BUSY_BODY = (
    b'{"type":"urn:roost:problem:service_unavailable","status":503,"code":"service_unavailable"}'
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/problem+json\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


def limited_http_protocol(limits: Limits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits``' deadlines and connection cap (pass it as
    ``uvicorn.run(http=...)``; uvicorn's own ``timeout_keep_alive`` covers idle keep-alive)."""
    header_timeout = float(limits.header_timeout_seconds)
    body_timeout = float(limits.body_timeout_seconds)
    max_connections = limits.max_connections

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refused a connection: %d connections open", max_connections)
                transport.write(_BUSY)
                transport.close()
                return
            # Covers the client that connects and never sends a byte, too.
            self._arm(header_timeout, "request headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a later request on a kept-alive connection
                self._arm(header_timeout, "request headers")

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            declared = 0
            for name, value in self.headers:
                if name == b"content-length" and value.isdigit():
                    declared = int(value)
            extra = declared // BODY_BYTES_PER_EXTRA_SECOND
            self._arm(body_timeout + extra, "request body")  # disarmed by on_message_complete

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            # The realtime socket has its own ping and idle timeouts (notify/).
            self._disarm()
            super().handle_websocket_upgrade()

        def _arm(self, seconds: float, what: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire, what)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self, what: str) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                log.debug("closed a connection: %s not received in time", what)
                self.transport.close()

    return LimitedHttpToolsProtocol
