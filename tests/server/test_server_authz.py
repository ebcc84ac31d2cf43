"""Authorisation on every route (no token, expired token, another client's token) and OpenAPI.

Every authenticated route is listed in ROUTES; a test fails if the app grows a route that is
missing here, so new routes cannot skip the matrix.
"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.routing import iter_route_contexts

from roost.server.store import Database
from roost.server.store.tables import metadata

from .helpers import MLS, batch, client_from, login, make_kp, new_key, publish

PUBLIC = {
    ("GET", "/.well-known/roost"),
    ("GET", "/v1/as/certificate"),
    ("POST", "/v1/register"),
    ("POST", "/v1/clients"),
    ("POST", "/v1/client-requests"),
    ("GET", "/v1/client-requests/{request_id}"),
    ("POST", "/v1/auth/challenge"),
    ("POST", "/v1/auth/token"),
}

# (method, template) -> how to call it against alice's resources. ``other`` says what a
# different user's valid token must get: a status, or None when the route only ever acts on
# the caller's own data (so another client's token cannot reach alice's data through it).
ROUTES: dict[tuple[str, str], tuple[str, dict, int | None]] = {
    ("DELETE", "/v1/clients/{client_uuid}"): ("/v1/clients/{alice2}", {}, 403),
    ("GET", "/v1/client-requests"): ("/v1/client-requests", {}, None),
    ("POST", "/v1/client-requests/{request_id}/approve"): (
        "/v1/client-requests/{req}/approve",
        {},
        404,  # another user's request is not disclosed: as an unknown id
    ),
    ("POST", "/v1/client-requests/{request_id}/reject"): (
        "/v1/client-requests/{req}/reject",
        {},
        404,  # another user's request is not disclosed: as an unknown id
    ),
    ("GET", "/v1/me"): ("/v1/me", {}, None),
    ("PATCH", "/v1/me"): ("/v1/me", {"json": {"display_name": "X"}}, None),
    ("DELETE", "/v1/me"): ("/v1/me", {}, None),
    ("GET", "/v1/domains/{domain}/as-certificate"): (
        "/v1/domains/localhost/as-certificate",
        {},
        None,
    ),
    ("GET", "/v1/users/{user_id}"): ("/v1/users/alice@localhost", {}, None),
    ("GET", "/v1/users/{user_id}/clients"): ("/v1/users/alice@localhost/clients", {}, None),
    ("GET", "/v1/directory"): ("/v1/directory?q=a", {}, None),
    ("POST", "/v1/connections"): ("/v1/connections", {"json": {"to": "bob@localhost"}}, None),
    ("GET", "/v1/connections"): ("/v1/connections", {}, None),
    ("POST", "/v1/connections/{connection_id}/request"): (
        "/v1/connections/{opening}/request",
        {"content": b"x", "headers": MLS},
        403,
    ),
    ("POST", "/v1/connections/{connection_id}/accept"): (
        "/v1/connections/{pending}/accept",
        {},
        403,
    ),
    ("POST", "/v1/connections/{connection_id}/reject"): (
        "/v1/connections/{pending}/reject",
        {},
        403,
    ),
    ("POST", "/v1/users/{user_id}/direct"): (
        "/v1/users/bob@localhost/direct",
        {"content": b"x", "headers": MLS},
        403,
    ),
    ("POST", "/v1/keypackages"): ("/v1/keypackages", {"content": b"\x00", "headers": MLS}, None),
    ("GET", "/v1/keypackages/count"): ("/v1/keypackages/count", {}, None),
    ("POST", "/v1/users/{user_id}/keypackages/claim"): (
        "/v1/users/bob@localhost/keypackages/claim",
        {},
        403,
    ),
    ("POST", "/v1/users/{user_id}/clients/{client_uuid}/keypackages/claim"): (
        "/v1/users/bob@localhost/clients/{bob1}/keypackages/claim",
        {},
        403,
    ),
    ("POST", "/v1/queues"): ("/v1/queues", {}, None),
    ("DELETE", "/v1/queues/{queue_id}"): ("/v1/queues/{qid}", {}, 403),
    ("POST", "/v1/queues/{queue_id}/messages"): (
        "/v1/queues/{qid}/messages",
        {"content": b"x", "headers": MLS},
        None,  # the queue id is the enqueue capability (docs/api.md)
    ),
    ("GET", "/v1/queues/{queue_id}/messages"): ("/v1/queues/{qid}/messages", {}, 403),
    ("POST", "/v1/queues/{queue_id}/ack"): ("/v1/queues/{qid}/ack", {"json": {"up_to": 9}}, 403),
    # Claiming a legacy queue's key: only its creator, and a keyed queue has nothing to claim.
    ("POST", "/v1/queues/{queue_id}/key"): ("/v1/queues/{qid}/key", {}, 403),
    ("GET", "/v1/direct/messages"): ("/v1/direct/messages", {}, None),
    ("POST", "/v1/direct/ack"): ("/v1/direct/ack", {"json": {"up_to": 9}}, None),
}


def app_routes(app) -> set[tuple[str, str]]:
    out = set()
    # FastAPI wraps included routers; iter_route_contexts flattens them (plain routes too).
    for route in iter_route_contexts(app.routes):
        methods = getattr(route, "methods", None) or set()
        path = getattr(route, "path", "")
        if path.startswith(("/docs", "/redoc", "/openapi")):
            continue
        if not getattr(route, "include_in_schema", True):  # the web page (docs/web.md)
            continue
        for m in methods - {"HEAD", "OPTIONS"}:
            out.add((m, path))
    return out


async def snapshot(db_url: str) -> dict[str, list]:
    db = Database(db_url)
    try:
        async with db.engine.connect() as conn:
            out = {}
            for t in metadata.sorted_tables:
                rows = (await conn.execute(sa.select(t))).all()
                out[t.name] = sorted(repr(tuple(r)) for r in rows)
            return out
    finally:
        await db.dispose()


def module_routes() -> set[tuple[str, str]]:
    """Routes of the modules this matrix covers (AS, connections, KeyPackages, queues); other
    modules (delivery, notify) keep their own authorisation tests."""
    from roost.server.auth.routes import router as auth
    from roost.server.connections.routes import router as connections
    from roost.server.keypackages.routes import router as keypackages
    from roost.server.queues.routes import router as queues

    out = set()
    for router in (auth, connections, keypackages, queues):
        out |= app_routes(router)
    return out


async def test_every_route_is_in_the_matrix(server):
    assert module_routes() == PUBLIC | set(ROUTES)
    assert module_routes() <= app_routes(server.app)


async def test_openapi_describes_every_route(server):
    doc = (await server.http.get("/openapi.json")).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert app_routes(server.app) <= documented
    for (method, path), (_, kwargs, _) in ROUTES.items():
        op = doc["paths"][path][method.lower()]
        assert op.get("summary") and op.get("description"), (method, path)
        if kwargs.get("headers") == MLS:
            assert "message/mls" in op["requestBody"]["content"], (method, path)
    claim = doc["paths"]["/v1/users/{user_id}/keypackages/claim"]["post"]
    assert "message/mls" in claim["responses"]["200"]["content"]
    assert "Problem" in doc["components"]["schemas"]


async def _setup(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    mallory = await server.user("mallory")
    priv, pub, key = new_key(alice.user_id)
    r = await server.http.post(
        "/v1/clients", json={"user_id": alice.user_id, "password": alice.password, "client": key}
    )
    alice2 = client_from(r.json(), priv, pub)
    await login(server.http, alice2)
    _, _, key = new_key(alice.user_id)
    await server.http.post("/v1/client-requests", json={"user_id": alice.user_id, "client": key})
    req = (await server.http.get("/v1/client-requests", headers=alice.headers)).json()["requests"][
        0
    ]
    qid = (await server.http.post("/v1/queues", headers=alice.headers)).json()["queue_id"]
    await server.http.post(
        f"/v1/queues/{qid}/messages", content=b"m", headers={**bob.headers, **MLS}
    )
    carol = await server.user("carol")
    r = await server.http.post("/v1/connections", json={"to": carol.user_id}, headers=alice.headers)
    opening = r.json()["connection_id"]
    r = await server.http.post("/v1/connections", json={"to": alice.user_id}, headers=bob.headers)
    pending = r.json()["connection_id"]
    await server.http.post(
        f"/v1/connections/{pending}/request", content=b"x", headers={**bob.headers, **MLS}
    )
    now = server.clock.now
    await publish(server.http, bob.client, batch(make_kp(bob.client, last_resort=True, now=now)))
    ids = {
        "alice2": alice2.client_uuid,
        "bob1": bob.client.client_uuid,
        "req": req["request_id"],
        "qid": qid,
        "opening": opening,
        "pending": pending,
    }
    return alice, mallory, ids


async def test_no_token_expired_token_and_other_token_change_nothing(server, db_url):
    alice, mallory, ids = await _setup(server)
    before = await snapshot(db_url)
    expired_token = alice.client.token
    for (method, _), (path, kwargs, other) in ROUTES.items():
        url = path.format(**ids)
        headers = dict(kwargs.get("headers", {}))
        call = {k: v for k, v in kwargs.items() if k != "headers"}
        r = await server.http.request(method, url, headers=headers, **call)
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated", (method, url)
        bad = {**headers, "Authorization": "Bearer not-a-token"}
        r = await server.http.request(method, url, headers=bad, **call)
        assert r.status_code == 401, (method, url)
        if other is not None:
            r = await server.http.request(
                method, url, headers={**headers, **mallory.headers}, **call
            )
            assert r.status_code == other, (method, url, r.text)
            assert r.headers["content-type"] == "application/problem+json"
    # Expired: advance past the token lifetime (mallory's token expires too).
    server.clock.advance(server.app.state.services.config.token_ttl_seconds + 1)
    for (method, _), (path, kwargs, _) in ROUTES.items():
        headers = {**kwargs.get("headers", {}), "Authorization": f"Bearer {expired_token}"}
        call = {k: v for k, v in kwargs.items() if k != "headers"}
        r = await server.http.request(method, path.format(**ids), headers=headers, **call)
        assert r.status_code == 401 and r.json()["code"] == "token_expired", (method, path)
    assert await snapshot(db_url) == before
