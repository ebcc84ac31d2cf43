"""A client's requests to its homeserver, on aiohttp's keep-alive connection pool.

The client library sends every API request (``Session.request``) through here: aiohttp's
request path costs about a third of the CPU of httpx's (benchmarks/README.md, "Fix: the
client library's requests on aiohttp"), and one process driving many clients is bound by
that CPU. Answers come back as ``httpx.Response`` values, the type the rest of the library
(and its callers) read; raw requests and asset transfers use the session's httpx client.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import certifi
import httpx

from .errors import transport_error

# Drop idle connections well before the server does (uvicorn closes them after 5 s): reusing
# one the server is closing at that moment fails with "Server disconnected".
KEEPALIVE_EXPIRY = 2.0


# aiohttp resends requests of these methods once by itself (RFC 9112 section 9.3.1.1).
_RESENT_BY_AIOHTTP = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class HttpChannel:
    """Keep-alive requests to one server; the pool is made in the running event loop at first
    use (and again if the client moves to another loop)."""

    def __init__(self, server: str, timeout: float) -> None:
        self.server = server.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _pool(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # For https, the CA bundle httpx uses too, so both channels trust the same servers
            # (loading it takes a while: not for a plain-http server).
            tls: ssl.SSLContext | bool = True
            if self.server.lower().startswith("https:"):
                tls = ssl.create_default_context(cafile=certifi.where())
            connector = aiohttp.TCPConnector(ssl=tls, keepalive_timeout=KEEPALIVE_EXPIRY)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
            )
            self._loop = loop
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request; resent once if the server closed a kept-alive connection just as we
        reused it (it then saw no request): a busy client loop can notice a response late and
        reuse a connection the server has already timed out. Transport failures become
        RoostError(status=0)."""
        # Paths come quoted (``session.segment``); the server's URL may carry a path prefix.
        url = self.server + path
        query = {k: _query_value(v) for k, v in params.items()} if params else None
        for attempt in range(2):
            try:
                async with self._pool().request(
                    method, url, json=json, data=content, params=query, headers=headers
                ) as resp:
                    body = await resp.read()
                    return httpx.Response(
                        resp.status,
                        headers=list(resp.raw_headers),
                        content=body,
                        request=httpx.Request(method, str(resp.url)),
                    )
            except aiohttp.ServerDisconnectedError as e:
                if attempt == 0 and method not in _RESENT_BY_AIOHTTP:
                    continue
                raise transport_error(method, path, e) from e
            except (aiohttp.ClientError, TimeoutError) as e:
                raise transport_error(method, path, e) from e
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def _query_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
