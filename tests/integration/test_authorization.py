"""Authorisation of every secured route: no token, another client's token and an expired token
are refused (401/403/404 problem+json) and change nothing.

The route list comes from the served OpenAPI document, so a new route that is not classified
here fails the test instead of going unchecked.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, replace

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roost.client import Realtime, RoostClient, RoostError
from roost.protocol.key_package_batch import encode_key_package_batch

from .conftest import Users

PROBLEM = "application/problem+json"

# Routes that act on an object named in the path which belongs to someone else: refused.
CROSS_DENIED = {
    ("DELETE", "/v1/clients/{client_uuid}"),
    ("POST", "/v1/client-requests/{request_id}/approve"),
    ("POST", "/v1/client-requests/{request_id}/reject"),
    ("POST", "/v1/connections/{connection_id}/request"),
    ("POST", "/v1/connections/{connection_id}/accept"),
    ("POST", "/v1/connections/{connection_id}/reject"),
    ("POST", "/v1/users/{user_id}/direct"),
    ("POST", "/v1/users/{user_id}/keypackages/claim"),
    ("POST", "/v1/users/{user_id}/clients/{client_uuid}/keypackages/claim"),
    ("DELETE", "/v1/queues/{queue_id}"),
    ("GET", "/v1/queues/{queue_id}/messages"),
    ("POST", "/v1/queues/{queue_id}/ack"),
    ("POST", "/v1/queues/{queue_id}/key"),  # a legacy queue's key: its creator's alone
}
# Discovery: any authenticated client may read these (and they change nothing).
CROSS_READABLE = {
    ("GET", "/v1/users/{user_id}"),
    ("GET", "/v1/users/{user_id}/clients"),
    ("GET", "/v1/directory"),
}
# The token selects the account: another client's token only ever reaches its own data.
SELF_SCOPED = {
    ("GET", "/v1/me"),
    ("PATCH", "/v1/me"),
    ("DELETE", "/v1/me"),
    ("GET", "/v1/client-requests"),
    ("GET", "/v1/connections"),
    ("POST", "/v1/connections"),
    ("POST", "/v1/keypackages"),
    ("GET", "/v1/keypackages/count"),
    ("POST", "/v1/queues"),
    ("GET", "/v1/direct/messages"),
    ("POST", "/v1/direct/ack"),
    ("POST", "/v1/realtime/tickets"),
}
# The queue id is the capability to enqueue (docs/api.md): no owner check by design.
CAPABILITY = {("POST", "/v1/queues/{queue_id}/messages")}
# Path prefixes of modules outside this suite's scope (only the token checks apply).
# /v1/domains: other domains' public AS certificates (tests/federation/test_as_flows.py).
OTHER_MODULES = ("/v1/groups", "/v1/ds/", "/v1/assets", "/v1/push", "/v1/domains")


@dataclass
class Victim:
    client: RoostClient
    phone: RoostClient
    queue_id: str
    outgoing: str  # connection in state "opening", victim is the requester
    incoming: str  # connection in state "pending", victim is the responder
    request_id: str  # a pending new-device request (public id)
    kp_batch: bytes

    async def snapshot(self) -> tuple:
        c = self.client
        me = await c.me()
        conns = sorted((x.connection_id, x.state) for x in await c.connections())
        return (
            me.display_name,
            me.discoverable,
            sorted(ci.client_id for ci in me.clients),
            await c.key_package_count(),
            (await c.fetch_queue(self.queue_id)).messages,
            (await c.fetch_direct()).events,
            conns,
            sorted(r.request_id for r in await c.client_requests()),
        )


async def _make_victim(users: Users, url: str) -> Victim:
    victim = await users.new("v", keypackages=3, display_name="Victim")
    phone = await users.second_client(victim)
    peer1 = await users.new("p", keypackages=1)
    peer2 = await users.new("q", keypackages=1)
    outgoing = (await victim.open_connection(peer1.user_id)).connection_id
    incoming = (await peer2.open_connection(victim.user_id)).connection_id
    await peer2.send_connection_request(incoming, b"join me")
    queue_id = await victim.create_queue()
    await victim.enqueue(queue_id, b"queued")
    pending = await RoostClient.request_approval(url, victim.user_id)
    await pending.aclose()
    [req] = await victim.client_requests()
    kps, _ = victim.generate_key_packages(2)
    return Victim(
        victim, phone, queue_id, outgoing, incoming, req.request_id, encode_key_package_batch(kps)
    )


def _secured_routes(openapi: dict) -> dict[tuple[str, str], dict]:
    return {
        (method.upper(), path): op
        for path, ops in sorted(openapi["paths"].items())
        for method, op in ops.items()
        if op.get("security")
    }


# A syntactically valid id for routes of other modules (groups): auth is checked before the
# object is looked up, so any value exercises the token check.
PLACEHOLDER_ID = "AAAAAAAAAAAAAAAAAAAAAA"


def _build(route: tuple[str, str], v: Victim, op: dict | None = None) -> dict:
    """A request to ``route`` aimed at the victim's objects, with a well-formed body."""
    method, template = route
    values = {
        "user_id": v.client.user_id,
        "client_uuid": v.phone.client_uuid,
        "request_id": v.request_id,
        "queue_id": v.queue_id,
        "connection_id": v.outgoing if template.endswith("/request") else v.incoming,
    }
    path = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), PLACEHOLDER_ID), template)
    req: dict = {"method": method, "url": path}
    mls = {"content": b"\x00\x01opaque", "headers": {"Content-Type": "message/mls"}}
    if route == ("PATCH", "/v1/me"):
        req["json"] = {"display_name": "Owned"}
    elif route == ("POST", "/v1/connections"):
        req["json"] = {"to": v.client.user_id}
    elif template.endswith("/ack"):
        req["json"] = {"up_to": 1000}
    elif route == ("POST", "/v1/keypackages"):
        req["content"] = v.kp_batch
        req["headers"] = {"Content-Type": "message/mls"}
    elif method == "POST" and (
        template.endswith(("/request", "/accept", "/direct")) or template.endswith("/messages")
    ):
        req.update(mls)
    elif op is not None and "requestBody" in op:
        content = op["requestBody"].get("content", {})
        if "message/mls" in content:
            req.update(mls)
        elif "application/json" in content:
            req["json"] = {}
    if template.endswith("/claim"):
        req["params"] = {"cipher_suite": 1}
    if route == ("GET", "/v1/directory"):
        req["params"] = {"q": v.client.user_id[:5]}
    return req


def _with_token(client: RoostClient, token: str) -> RoostClient:
    """A copy of ``client`` that presents ``token`` as if it were fresh."""
    return RoostClient(replace(client.state, token=token, token_expires_at=time.time() + 3600))


async def _upgrade(url: str, token: str | None) -> tuple[int, str]:
    """Try the realtime WebSocket upgrade; (HTTP status, problem code) of the refusal."""
    ws_url = url.replace("http://", "ws://") + "/v1/realtime"
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        async with connect(ws_url, additional_headers=headers, proxy=None):
            return 101, ""
    except InvalidStatus as e:
        assert e.response.headers["Content-Type"].startswith(PROBLEM)
        return e.response.status_code, json.loads(e.response.body)["code"]


async def _send(http: httpx.AsyncClient, req: dict, token: str | None) -> httpx.Response:
    headers = dict(req.get("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await http.request(**{**req, "headers": headers})


def _assert_problem(resp: httpx.Response, statuses: set[int], route, codes=None) -> None:
    assert resp.status_code in statuses, (route, resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith(PROBLEM), (route, resp.headers)
    body = resp.json()
    assert body["status"] == resp.status_code and body["code"], (route, body)
    if codes is not None:
        assert body["code"] in codes, (route, body)


async def test_every_secured_route_refuses_bad_tokens(strict_server):
    users = Users(strict_server.url)
    try:
        async with httpx.AsyncClient(base_url=strict_server.url, timeout=30) as http:
            openapi = (await http.get("/openapi.json")).json()
            ops = _secured_routes(openapi)
            routes = sorted(ops)
            classified = CROSS_DENIED | CROSS_READABLE | SELF_SCOPED | CAPABILITY
            assert classified <= set(routes), sorted(classified - set(routes))
            # Routes of this modules must be classified for the cross-client checks;
            # other modules' routes (the Delivery Service) get the token checks below and
            # their own cross-client tests.
            unclassified = {r for r in routes if not r[1].startswith(OTHER_MODULES)}
            assert unclassified <= classified, sorted(unclassified - classified)

            v = await _make_victim(users, strict_server.url)
            attacker = await users.new("x", keypackages=1)
            expired_token = await v.client.authenticate()
            expires_at = v.client.state.token_expires_at
            before = await v.snapshot()

            # 1. No token, and a token the server never issued.
            for route in routes:
                req = _build(route, v, ops[route])
                _assert_problem(await _send(http, req, None), {401}, route, {"unauthenticated"})
                _assert_problem(
                    await _send(http, req, "bogus-token"), {401}, route, {"unauthenticated"}
                )
            for token in (None, "bogus-token"):
                assert await _upgrade(strict_server.url, token) == (401, "unauthenticated")
            assert await v.snapshot() == before

            # 2. Another user's client, aimed at the victim's objects.
            for route in sorted(CROSS_DENIED):
                resp = await _send(http, _build(route, v), await attacker.bearer_token())
                _assert_problem(resp, {403, 404}, route)
            for route in sorted(CROSS_READABLE):
                resp = await _send(http, _build(route, v), await attacker.bearer_token())
                assert resp.status_code == 200, (route, resp.text)
            for route in (("GET", "/v1/me"), ("GET", "/v1/connections")):
                resp = await _send(http, _build(route, v), await attacker.bearer_token())
                assert resp.status_code == 200 and v.client.client_id not in resp.text
            assert await v.snapshot() == before
            # ... and neither the victim's other client nor the victim's own token reaches the
            # queue without its key: the key authorises, not the client.
            for token in (await v.phone.bearer_token(), await v.client.bearer_token()):
                for route in (
                    ("GET", "/v1/queues/{queue_id}/messages"),
                    ("POST", "/v1/queues/{queue_id}/ack"),
                    ("DELETE", "/v1/queues/{queue_id}"),
                ):
                    resp = await _send(http, _build(route, v), token)
                    _assert_problem(resp, {403}, route, {"forbidden"})
            assert await v.snapshot() == before

            # 3. The victim's own token once it has expired.
            await asyncio.sleep(max(0.0, expires_at - time.time()) + 1.5)
            for route in routes:
                resp = await _send(http, _build(route, v, ops[route]), expired_token)
                _assert_problem(resp, {401}, route, {"token_expired"})
            assert await _upgrade(strict_server.url, expired_token) == (401, "token_expired")
            with pytest.raises(RoostError) as e:  # as the client library reports it
                await Realtime(_with_token(v.client, expired_token)).connect()
            assert (e.value.status, e.value.code) == (401, "token_expired")
            # The client library recovers on its own: the server's 401 makes it fetch a fresh
            # token and retry (here it believes the expired token is still good).
            v.client.state.token = expired_token
            v.client.state.token_expires_at = time.time() + 3600  # pretend it looks fresh
            assert await v.snapshot() == before
            assert v.client.state.token != expired_token
    finally:
        await users.aclose()
