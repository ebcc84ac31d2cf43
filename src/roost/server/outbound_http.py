"""The httpx side of the outbound policy (outbound.py): a transport that connects only to the
addresses the policy checked. Imported at the first outbound request, not at start-up."""

from __future__ import annotations

from typing import Any

import httpx

from .outbound import OutboundPolicy, OutboundRefused, OutboundUnresolved


class RefusedConnect(httpx.ConnectError, OutboundRefused):
    """``OutboundRefused`` raised through a request: callers catching either see it."""


class UnresolvedConnect(httpx.ConnectError, OutboundUnresolved):
    """``OutboundUnresolved`` raised through a request: callers catching either see it."""


def pinned_client(
    policy: OutboundPolicy,
    http2: bool,
    limits: dict[str, int] | None,
    client_options: dict[str, Any],
) -> httpx.AsyncClient:
    """The client ``OutboundClient`` stands for (outbound_client.py)."""
    transport_options: dict[str, Any] = {"http2": http2}
    if limits is not None:
        transport_options["limits"] = httpx.Limits(**limits)
    return httpx.AsyncClient(
        transport=PinnedTransport(policy, **transport_options), **client_options
    )


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request's target with ``policy`` and connects to
    the checked address. Keyword arguments go to the ``httpx.AsyncHTTPTransport`` underneath
    (``http2``, ``limits``, ``verify``)."""

    def __init__(self, policy: OutboundPolicy, **transport_options: Any) -> None:
        self.policy = policy
        self._options = transport_options
        # Made at the first request: the connection pool, its TLS context (the CA bundle) and
        # the HTTP/1.1 and HTTP/2 stacks cost memory and start-up time that a server which
        # never calls out (no federation peer, no push registration) need not pay.
        self._inner: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self.policy.addresses(url.host, port)
        except OutboundRefused as e:
            raise RefusedConnect(str(e), request=request) from None
        except OutboundUnresolved as e:
            raise UnresolvedConnect(str(e), request=request) from None
        if url.host != addresses[0]:
            # A name, or a literal in an odd form: connect to exactly the address checked.
            # httpx set Host from the original URL already; TLS checks the original name.
            request.url = url.copy_with(host=addresses[0])
            request.extensions = {**request.extensions, "sni_hostname": url.host}
        if self._inner is None:
            self._inner = httpx.AsyncHTTPTransport(**self._options)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
