"""Server-side request forgery: Web Push endpoints and federation hosts that are, or resolve
to, loopback or private addresses are refused, in every numeric spelling, and no connection
reaches a local listener; the transport connects to the address it checked.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from roost.server.config import build_config
from roost.server.federation.resolver import Resolver
from roost.server.outbound import OutboundPolicy, OutboundRefused
from roost.server.outbound_http import PinnedTransport

LOOPBACK_FORMS = ("2130706433", "0x7f000001", "127.1", "127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")


def _names_resolving_to_loopback() -> list[str]:
    """Names this machine resolves to loopback (``localhost.``, and /etc/hosts entries)."""
    names = []
    for name in ("localhost.", "LOCALHOST", "localhost.localdomain", "runsc", "vm"):
        try:
            infos = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if infos and all(i[4][0] in ("127.0.0.1", "::1") for i in infos):
            names.append(name)
    assert names, "no name resolves to loopback here"
    return names


class Listener:
    """A loopback TCP listener that answers any request with 200 and counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.requests.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as lst:
        yield lst


def _subscription(endpoint: str) -> dict[str, object]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    p256dh = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return {
        "kind": "webpush",
        "endpoint": endpoint,
        "keys": {"p256dh": b64(p256dh), "auth": b64(b"\x01" * 16)},
    }


async def test_web_push_registration_refuses_internal_targets(users, listener) -> None:
    alice = await users.new("alice")
    token = await alice.bearer_token()
    hosts = [*LOOPBACK_FORMS, *_names_resolving_to_loopback(), "10.0.0.1", "169.254.169.254"]
    async with httpx.AsyncClient(base_url=alice.state.server, timeout=10) as http:
        for host in hosts:
            resp = await http.put(
                "/v1/push",
                json=_subscription(f"https://{host}:{listener.port}/p"),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert resp.status_code == 400, (host, resp.text)
            assert resp.json()["code"] == "invalid_subscription"
        got = await http.get("/v1/push", headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == 404  # nothing was stored
    await asyncio.sleep(0.2)
    assert listener.connections == 0


async def test_transport_refuses_and_never_connects(listener) -> None:
    policy = OutboundPolicy()
    async with httpx.AsyncClient(transport=PinnedTransport(policy), timeout=5) as http:
        for host in [*LOOPBACK_FORMS, *_names_resolving_to_loopback()]:
            with pytest.raises(OutboundRefused):
                await http.get(f"http://{host}:{listener.port}/p")
    assert listener.connections == 0


async def test_transport_connects_to_the_checked_address(listener) -> None:
    """Allowed (tests, or the operator's own hosts): the name is resolved once and the
    connection goes to that address, with the original name as Host."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    policy = OutboundPolicy(allow_private=True, resolve=resolve)
    async with httpx.AsyncClient(transport=PinnedTransport(policy), timeout=5) as http:
        resp = await http.get(f"http://push.example:{listener.port}/p")
    assert resp.status_code == 200 and asked == ["push.example"]
    assert f"host: push.example:{listener.port}".encode() in listener.requests[0].lower()

    async def rebinding(host: str, port: int) -> list[str]:  # one public, one private answer
        return ["93.184.216.34", "127.0.0.1"]

    with pytest.raises(OutboundRefused):
        await OutboundPolicy(resolve=rebinding).addresses("push.example", 443)


async def test_federation_policy_refuses_names_at_private_addresses(listener) -> None:
    config = build_config(
        {"federation_resolve": {"b.test": f"127.0.0.1:{listener.port}"}},
        {"ROOST_FEDERATION_INSECURE_DOMAINS": "b.test"},
    )
    resolver = Resolver(config)
    transport = PinnedTransport(resolver.outbound_policy(config.outbound_allow_private))
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        # the operator's override is trusted
        assert (await http.get(resolver.base_url("b.test") + "/x")).status_code == 200
        # a domain named by a remote user id is checked: loopback names are refused
        for name in _names_resolving_to_loopback():
            with pytest.raises(OutboundRefused):
                await http.get(f"https://{name}:{listener.port}/federation/v1/keys")
    assert listener.connections == 1
