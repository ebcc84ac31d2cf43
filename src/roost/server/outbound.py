"""Outbound-address policy: where the server may open a connection on someone else's behalf.

Web Push endpoints come from clients and federation hosts from remote user ids, so either could
point the server at itself or its private network (server-side request forgery). Every outbound
HTTP client (push/, federation/) goes through ``PinnedTransport``, which

1. normalises the host (IP literals in every form a resolver accepts: ``2130706433``,
   ``0x7f000001``, ``127.1``, ``[::ffff:127.0.0.1]``),
2. resolves a name once,
3. refuses the request if any address is loopback, private, link-local, multicast, reserved,
   unspecified or otherwise not globally routable, unless ``outbound_allow_private`` is set or
   the host is one the operator configured (``trusted_hosts``), and
4. connects to the checked address, with the original name for TLS (SNI, certificate check)
   and the ``Host`` header, so DNS cannot answer differently between check and use.

The httpx side (``PinnedTransport``) lives in ``outbound_http.py`` and loads with the first
outbound request (``outbound_client.py``): a server that never calls out (no federation peer, no
push registration) does not pay httpx's memory and start-up time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses a connection may go to (tests may hand in their own)
Resolve = Callable[[str, int], Awaitable[list[str]]]


class OutboundRefused(Exception):
    """The target is not one the policy lets the server connect to; nothing was sent.
    Raised through a request, it is also an ``httpx.ConnectError`` (outbound_http.py)."""


class OutboundUnresolved(Exception):
    """The host name does not resolve (now): nothing to check, nothing was sent.
    Raised through a request, it is also an ``httpx.ConnectError`` (outbound_http.py)."""


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form ``getaddrinfo`` would take as a literal
    (including inet_aton's decimal, hex, octal and short dotted forms); None for a name."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: what a public service's address looks like."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_public(mapped)
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_unspecified
    )


def _normal(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


class OutboundPolicy:
    """Decides the addresses a host may be reached at (see the module docstring)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        trusted_hosts: Iterable[str] = (),
        resolve: Resolve = system_resolve,
    ) -> None:
        self.allow_private = allow_private
        self.trusted_hosts = {_normal(h) for h in trusted_hosts}
        self._resolve = resolve

    def trust(self, *hosts: str) -> None:
        """Allow ``hosts`` whatever they resolve to: hosts the operator configured."""
        self.trusted_hosts.update(_normal(h) for h in hosts if h)

    async def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses of ``host``; raises ``OutboundUnresolved`` if there is none,
        ``OutboundRefused`` if any is not public (a name must not mix public and private
        answers: DNS rebinding)."""
        if not host:
            raise OutboundRefused("no host")
        literal = literal_address(host)
        if literal is not None:
            candidates = [str(literal)]
        else:
            try:
                candidates = await self._resolve(host, port)
            except (OSError, UnicodeError):  # gaierror: no such name; IDNA: not a name
                raise OutboundUnresolved(f"{host} does not resolve") from None
        if not candidates:
            raise OutboundUnresolved(f"{host} does not resolve")
        if self.allow_private or _normal(host) in self.trusted_hosts:
            return candidates
        if not all(is_public(ipaddress.ip_address(a.split("%", 1)[0])) for a in candidates):
            raise OutboundRefused(f"{host} is not a public address")
        return candidates

    async def check_url(self, url: str) -> None:
        """Raises ``OutboundRefused`` unless ``url``'s host is an allowed target (or
        ``OutboundUnresolved``): for checks at registration time, before anything is stored."""
        import httpx  # its URL parser, the one the transport will use

        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise OutboundRefused("not a valid URL") from None
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        await self.addresses(parsed.host, port)
