"""``POST /v1/groups/{group_id}/messages`` has one parse (``delivery/sends.py``) and two ways
in: the raw-ASGI fast path that serves every such request, and the FastAPI route declared for
the OpenAPI document. Both answer alike: the same request (or its retry) gets the same answer
whichever way it comes in."""

from __future__ import annotations

import secrets

import httpx

from roost.protocol.base64url import b64u
from roost.server.app import create_app
from roost.server.delivery.fastpath import SendFastPath

from .delivery_helpers import member
from .helpers import MLS
from .test_delivery_rules import trio


def _route_only(server) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    """A client of the same app and services, without the fast path in front of the route."""
    services = server.app.state.services
    app = create_app(services.config, clock=server.clock)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not SendFastPath]
    app.state.services = services
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://roost.test")


async def test_fast_path_and_documented_route_answer_alike(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, _ = await trio(server)
    outsider = await member(http, await server.user("dave"))
    limit = server.app.state.services.config.limits.max_message_bytes
    path = f"/v1/groups/{b64u(gid)}/messages"
    other_group = f"/v1/groups/{b64u(b'x' * 22 + b'@localhost')}/messages"

    def ok(m, msg: bytes, mid: str) -> dict:  # type: ignore[no-untyped-def]
        return {
            "url": path,
            "content": msg,
            "headers": {**m.headers, **MLS, "Roost-Message-Id": mid},
        }

    mid = secrets.token_hex(8)
    hello = alice.group.encrypt(b"hello")
    requests: list[dict] = [
        ok(alice, hello, mid),  # stored here, answered from the record the other way
        {"url": path, "content": hello, "headers": {**MLS, "Roost-Message-Id": "a"}},
        {
            "url": "/v1/groups/!!/messages",
            "content": hello,
            "headers": ok(alice, hello, "b")["headers"],
        },
        {
            "url": path,
            "content": hello,
            "headers": {**alice.headers, **MLS, "Roost-Message-Id": ""},
        },
        {"url": path, "content": hello, "headers": {**alice.headers, "Roost-Message-Id": "c"}},
        ok(alice, b"", "d"),
        ok(alice, b"\0" * (limit + 1), "e"),
        ok(alice, b"not mls at all", "f"),
        {**ok(alice, hello, "g"), "url": other_group},
        ok(outsider, hello, "h"),
    ]
    async with _route_only(server) as route:
        for request in requests:
            via_fast_path = await http.post(**request)
            via_route = await route.post(**request)
            assert via_fast_path.status_code == via_route.status_code, request["url"]
            assert via_fast_path.json() == via_route.json(), (via_fast_path.text, via_route.text)
        # A new message through the route, retried through the fast path: one position.
        mid = secrets.token_hex(8)
        bye = bob.group.encrypt(b"bye")
        first = await route.post(**ok(bob, bye, mid))
        assert first.status_code == 201, first.text
        retried = await http.post(**ok(bob, bye, mid))
        assert retried.json() == first.json()
