"""/metrics counts what the push sender really did, per provider, on both engines: pushes to the
stand-in Web Push, APNs and FCM services (separate processes), a subscription the service says
is gone, an unreachable endpoint, and wake-ups folded by coalescing."""

from __future__ import annotations

import asyncio
import re

from .conftest import Server, running_server
from .delivery_helpers import Member, add_members, connect, create_group, member, send
from .test_push import (  # noqa: F401 - push_services is a fixture
    Services,
    push_config,
    push_services,
    received,
    settle,
)


def counter(text: str, name: str, provider: str) -> float:
    m = re.search(rf'^roost_push_{name}_total{{provider="{provider}"}} (\S+)$', text, re.M)
    assert m is not None, f"roost_push_{name}_total{{provider={provider}}} missing"
    return float(m.group(1))


async def scrape(server: Server) -> str:
    r = await server.http.get("/metrics")
    assert r.status_code == 200
    return r.text


def webpush(subscription: dict) -> dict:
    return {"kind": "webpush", **subscription}


async def register(server: Server, m: Member, body: dict) -> None:
    r = await server.http.put("/v1/push", json=body, headers=m.headers)
    assert r.status_code == 204, r.text


async def test_push_counters_follow_real_pushes(db_url: str, push_services: Services) -> None:  # noqa: F811
    ps = push_services
    for s in (ps.webpush, ps.apns, ps.fcm):
        await asyncio.to_thread(s.reset)
    async with running_server(push_config(db_url, ps)) as server:
        http = server.http
        text = await scrape(server)
        for provider in ("webpush", "apns", "fcm"):  # listed from the start, at zero
            for name in ("attempts", "sent", "failed", "unregistered", "coalesced"):
                assert counter(text, name, provider) == 0
            assert counter(text, "suppressed_online", provider) == 0
        assert re.search(r"^roost_push_queue_depth 0\.0$", text, re.M)
        assert re.search(r"^roost_push_dropped_total 0\.0$", text, re.M)

        names = ("alice", "bob", "carol", "dave", "erin", "frank")
        alice, bob, carol, dave, erin, frank = [
            await member(http, await server.user(n)) for n in names
        ]
        gid, r = await create_group(http, alice)
        assert r.status_code == 201, r.text
        for other in (bob, carol, dave, erin, frank):
            await connect(http, alice.user, other.user)
        r = await add_members(http, alice, gid, [bob, carol, dave, erin, frank])
        assert r.status_code == 201, r.text
        await settle(server)  # the Welcomes: nobody is registered yet

        await register(server, bob, webpush(await asyncio.to_thread(ps.webpush.subscribe, "b")))
        await register(server, carol, {"kind": "apns", "token": "carol-device"})
        await register(server, dave, {"kind": "fcm", "token": "dave-device"})
        gone = await asyncio.to_thread(ps.webpush.subscribe, "gone-erin")  # answered 410
        await register(server, erin, webpush(gone))
        unreachable = await asyncio.to_thread(ps.webpush.subscribe, "frank")
        await register(server, frank, webpush({**unreachable, "endpoint": "http://127.0.0.1:1/x"}))

        assert (await send(http, alice, gid, b"one")).status_code == 201
        await settle(server)
        for _ in range(3):  # within every recipient's coalescing window (the clock stands)
            assert (await send(http, alice, gid, b"more")).status_code == 201
        await settle(server)

        text = await scrape(server)
        # webpush: bob sent, erin unregistered (410), frank failed (connection refused)
        assert counter(text, "attempts", "webpush") == 3
        assert counter(text, "sent", "webpush") == 1
        assert counter(text, "unregistered", "webpush") == 1
        assert counter(text, "failed", "webpush") == 1
        # bob and frank kept their windows (erin's registration is gone): 2 x 3 folded
        assert counter(text, "coalesced", "webpush") == 6
        for provider in ("apns", "fcm"):
            assert counter(text, "attempts", provider) == 1
            assert counter(text, "sent", provider) == 1
            assert counter(text, "failed", provider) == 0
            assert counter(text, "coalesced", provider) == 3
        assert re.search(r"^roost_push_queue_depth 0\.0$", text, re.M)
        # what the stand-ins saw agrees with the counters
        assert [g["subscription"] for g in await received(ps.webpush) if "plaintext" in g] == ["b"]
        assert len(await received(ps.apns)) == 1
        assert len([g for g in await received(ps.fcm) if "message" in g]) == 1
