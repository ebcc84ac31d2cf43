"""``OutboundClient``: the server's outbound HTTP client (push/, federation/), made at its
first request, so that a server which never calls out does not load httpx at all."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from .outbound import OutboundPolicy

if TYPE_CHECKING:
    import httpx


class OutboundClient:
    """An ``httpx.AsyncClient`` whose every request goes through ``PinnedTransport`` (checked
    by ``policy``), made at its first request. ``http2`` and ``limits`` (``httpx.Limits``
    arguments) are the transport's, the other keyword arguments the client's (``timeout``)."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        http2: bool = False,
        limits: dict[str, int] | None = None,
        **client_options: Any,
    ) -> None:
        self.policy = policy
        self._http2 = http2
        self._limits = limits
        self._client_options = client_options
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            from .outbound_http import pinned_client

            self._client = pinned_client(
                self.policy, self._http2, self._limits, self._client_options
            )
        return self._client

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        return self.client.build_request(method, url, **kwargs)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        return await self.client.send(request, **kwargs)

    async def post(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return await self.client.post(url, **kwargs)

    def stream(
        self, method: str, url: httpx.URL | str, **kwargs: Any
    ) -> AbstractAsyncContextManager[httpx.Response]:
        return self.client.stream(method, url, **kwargs)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
