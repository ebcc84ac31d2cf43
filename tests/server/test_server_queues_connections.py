"""Queues (group-message and direct) and the connection flow."""

from __future__ import annotations

import json

from roost.protocol.base64url import unb64u

from .helpers import MLS, client_from, login, messages, new_key


async def new_queue(server, user) -> tuple[str, dict[str, str]]:
    """A new group-message queue: its id and the owner's headers (bearer token + queue key)."""
    r = await server.http.post("/v1/queues", headers=user.headers)
    assert r.status_code == 201
    return r.json()["queue_id"], {**user.headers, "Roost-Queue-Key": r.json()["queue_key"]}


async def enqueue(server, user, qid: str, payload: bytes, message_id: str | None = None):
    headers = {**user.headers, **MLS}
    if message_id:
        headers["Roost-Message-Id"] = message_id
    return await server.http.post(f"/v1/queues/{qid}/messages", content=payload, headers=headers)


async def test_queue_seq_fetch_caps_ack_and_idempotency(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    qid, owner = await new_queue(server, alice)
    _, bobs_own = await new_queue(server, bob)
    seqs = [(await enqueue(server, bob, qid, bytes([i]) * 100)).json()["seq"] for i in range(10)]
    assert seqs == list(range(1, 11))
    r = await enqueue(server, bob, qid, b"retry", message_id="m-1")
    again = await enqueue(server, bob, qid, b"retry", message_id="m-1")
    assert r.json()["seq"] == again.json()["seq"] == 11
    r = await server.http.get(f"/v1/queues/{qid}/messages?after=3&limit=4", headers=owner)
    assert r.headers["content-type"] == "application/vnd.roost.messages"
    got = messages(r.content)
    assert [s for s, _ in got] == [4, 5, 6, 7] and got[0][1] == bytes([3]) * 100
    assert r.headers["roost-last-seq"] == "7" and r.headers["roost-has-more"] == "true"
    r = await server.http.get(f"/v1/queues/{qid}/messages?after=0&max_bytes=250", headers=owner)
    assert [s for s, _ in messages(r.content)] == [1, 2]
    r = await server.http.get(f"/v1/queues/{qid}/messages?after=0&max_bytes=1", headers=owner)
    assert [s for s, _ in messages(r.content)] == [1]  # always at least one
    # the queue's key only: not the bearer token alone, not another queue's key
    for headers in (alice.headers, bob.headers, bobs_own):
        r = await server.http.get(f"/v1/queues/{qid}/messages", headers=headers)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        r = await server.http.post(f"/v1/queues/{qid}/ack", json={"up_to": 5}, headers=headers)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await server.http.post(f"/v1/queues/{qid}/ack", json={"up_to": 5}, headers=owner)
    assert r.status_code == 204
    r = await server.http.get(f"/v1/queues/{qid}/messages", headers=owner)
    assert [s for s, _ in messages(r.content)] == [6, 7, 8, 9, 10, 11]
    assert r.headers["roost-has-more"] == "false"
    # seq numbers continue after an ack (gap-free, never reused)
    assert (await enqueue(server, bob, qid, b"x")).json()["seq"] == 12
    r = await server.http.get("/v1/queues/AAAAAAAAAAAAAAAAAAAAAA/messages", headers=owner)
    assert r.status_code == 404 and r.json()["code"] == "queue_not_found"
    for headers in (alice.headers, bobs_own):
        r = await server.http.delete(f"/v1/queues/{qid}", headers=headers)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert (await server.http.delete(f"/v1/queues/{qid}", headers=owner)).status_code == 204
    assert (await enqueue(server, bob, qid, b"x")).status_code == 404


async def test_queue_limits(server):
    alice = await server.user("alice")
    qid, owner = await new_queue(server, alice)
    big = b"x" * (server.app.state.services.config.limits.max_message_bytes + 1)
    r = await enqueue(server, alice, qid, big)
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    huge = b"x" * (server.app.state.services.config.limits.max_body_bytes + 1)
    r = await enqueue(server, alice, qid, huge)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    r = await server.http.get(f"/v1/queues/{qid}/messages", headers=owner)
    assert messages(r.content) == []


async def direct_events(server, user, after: int = 0) -> list[tuple[int, dict]]:
    r = await server.http.get(f"/v1/direct/messages?after={after}", headers=user.headers)
    assert r.status_code == 200
    return [(s, json.loads(p)) for s, p in messages(r.content)]


async def test_connection_request_accept_and_reject(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    carol = await server.user("carol")
    r = await server.http.post("/v1/connections", json={"to": bob.user_id}, headers=alice.headers)
    assert r.status_code == 201 and r.json()["state"] == "opening"
    cid = r.json()["connection_id"]
    r = await server.http.post("/v1/connections", json={"to": bob.user_id}, headers=alice.headers)
    assert r.status_code == 409 and r.json()["code"] == "connection_exists"
    r = await server.http.post("/v1/connections", json={"to": alice.user_id}, headers=alice.headers)
    assert r.status_code == 422
    r = await server.http.post("/v1/connections", json={"to": "x@localhost"}, headers=alice.headers)
    assert r.status_code == 404
    # only the responder answers, only once the request was sent
    r = await server.http.post(f"/v1/connections/{cid}/accept", headers=bob.headers)
    assert r.status_code == 409 and r.json()["code"] == "invalid_state"
    r = await server.http.post(
        f"/v1/connections/{cid}/request", content=b"welcome-bytes", headers={**alice.headers, **MLS}
    )
    assert r.json()["state"] == "pending"
    ((seq, event),) = await direct_events(server, bob)
    assert event["type"] == "connection_request" and event["from"] == alice.user_id
    assert event["connection_id"] == cid and unb64u(event["payload"]) == b"welcome-bytes"
    assert (
        await server.http.post(f"/v1/connections/{cid}/accept", headers=carol.headers)
    ).status_code == 403
    assert (
        await server.http.post(f"/v1/connections/{cid}/accept", headers=alice.headers)
    ).status_code == 403
    r = await server.http.post(
        f"/v1/connections/{cid}/accept", content=b"hi", headers={**bob.headers, **MLS}
    )
    assert r.status_code == 200 and r.json()["state"] == "accepted"
    ((_, event),) = await direct_events(server, alice)
    assert event["type"] == "connection_accepted" and event["from"] == bob.user_id
    # connected users may message each other's direct queues; strangers may not
    r = await server.http.post(
        f"/v1/users/{bob.user_id}/direct", content=b"w2", headers={**alice.headers, **MLS}
    )
    assert r.status_code == 202
    r = await server.http.post(
        f"/v1/users/{bob.user_id}/direct", content=b"w2", headers={**carol.headers, **MLS}
    )
    assert r.status_code == 403 and r.json()["code"] == "no_connection"
    # bob's own queue has his answer too (his other clients learn it)
    assert [e["type"] for _, e in await direct_events(server, bob)] == [
        "connection_request",
        "connection_accepted",
        "message",
    ]
    # rejection is reported too
    r = await server.http.post("/v1/connections", json={"to": bob.user_id}, headers=carol.headers)
    cid2 = r.json()["connection_id"]
    await server.http.post(
        f"/v1/connections/{cid2}/request", content=b"x", headers={**carol.headers, **MLS}
    )
    r = await server.http.post(f"/v1/connections/{cid2}/reject", headers=bob.headers)
    assert r.json()["state"] == "rejected"
    ((_, event),) = await direct_events(server, carol)
    assert event["type"] == "connection_rejected" and event["from"] == bob.user_id
    listed = (await server.http.get("/v1/connections", headers=bob.headers)).json()["connections"]
    assert sorted(c["state"] for c in listed) == ["accepted", "rejected"]


async def test_direct_queue_acks_per_client(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    priv, pub, key = new_key(bob.user_id)
    r = await server.http.post(
        "/v1/clients", json={"user_id": bob.user_id, "password": bob.password, "client": key}
    )
    bob2 = client_from(r.json(), priv, pub)
    await login(server.http, bob2)
    r = await server.http.post("/v1/connections", json={"to": bob.user_id}, headers=alice.headers)
    cid = r.json()["connection_id"]
    await server.http.post(
        f"/v1/connections/{cid}/request", content=b"x", headers={**alice.headers, **MLS}
    )
    assert len(await direct_events(server, bob)) == 1
    r = await server.http.post("/v1/direct/ack", json={"up_to": 1}, headers=bob.headers)
    assert r.status_code == 204
    # bob's second client has not acked yet: the message is still there for it
    r = await server.http.get("/v1/direct/messages", headers=bob2.headers)
    assert len(messages(r.content)) == 1
    await server.http.post("/v1/direct/ack", json={"up_to": 1}, headers=bob2.headers)
    r = await server.http.get("/v1/direct/messages", headers=bob2.headers)
    assert messages(r.content) == []


async def test_account_deletion_removes_queues_and_packages(server):
    from .helpers import batch, make_kp, publish

    alice = await server.user("alice")
    bob = await server.user("bob")
    qid, _ = await new_queue(server, alice)
    await enqueue(server, bob, qid, b"m")
    now = server.clock.now
    await publish(
        server.http, alice.client, batch(make_kp(alice.client, last_resort=True, now=now))
    )
    r = await server.http.post("/v1/connections", json={"to": bob.user_id}, headers=alice.headers)
    assert r.status_code == 201
    assert (await server.http.delete("/v1/me", headers=alice.headers)).status_code == 204
    assert (await enqueue(server, bob, qid, b"m")).status_code == 404
    r = await server.http.post(f"/v1/users/{alice.user_id}/keypackages/claim", headers=bob.headers)
    assert r.status_code == 404
    assert (await server.http.get("/v1/connections", headers=bob.headers)).json()[
        "connections"
    ] == []


async def test_streamed_body_over_the_cap_is_refused(server):
    alice = await server.user("alice")
    qid, owner = await new_queue(server, alice)
    limit = server.app.state.services.config.limits.max_body_bytes

    async def chunks():  # no Content-Length: the cap is enforced while streaming
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    r = await server.http.post(
        f"/v1/queues/{qid}/messages", content=chunks(), headers={**alice.headers, **MLS}
    )
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    r = await server.http.get(f"/v1/queues/{qid}/messages", headers=owner)
    assert messages(r.content) == []


async def test_concurrent_opens_and_first_direct_enqueues(server):
    import asyncio

    bob = await server.user("bob")
    senders = [await server.user(f"s{i}") for i in range(6)]
    # many users write to bob's (not yet existing) direct queue at once: gap-free seqs
    opened = [
        (
            await server.http.post("/v1/connections", json={"to": bob.user_id}, headers=s.headers)
        ).json()
        for s in senders
    ]
    results = await asyncio.gather(
        *(
            server.http.post(
                f"/v1/connections/{c['connection_id']}/request",
                content=b"x",
                headers={**s.headers, **MLS},
            )
            for c, s in zip(opened, senders, strict=True)
        )
    )
    assert all(r.status_code == 200 for r in results)
    assert [seq for seq, _ in await direct_events(server, bob)] == [1, 2, 3, 4, 5, 6]
    # the same pair opened concurrently: exactly one wins
    alice = await server.user("alice")
    answers = await asyncio.gather(
        *(
            server.http.post("/v1/connections", json={"to": bob.user_id}, headers=alice.headers)
            for _ in range(8)
        )
    )
    assert sorted(r.status_code for r in answers) == [201] + [409] * 7


async def test_connection_list_is_paginated(db_url):
    from .conftest import make_config, running_server

    async with running_server(make_config(db_url, limits={"max_list_length": 2})) as s:
        hub = await s.user("hub")
        for i in range(5):
            other = await s.user(f"p{i}")
            r = await s.http.post(
                "/v1/connections", json={"to": hub.user_id}, headers=other.headers
            )
            assert r.status_code == 201
            s.clock.advance(1)
        seen, cursor = [], None
        while True:
            params = {"cursor": cursor} if cursor else {}
            page = (await s.http.get("/v1/connections", params=params, headers=hub.headers)).json()
            assert len(page["connections"]) <= 2
            seen += [c["requester"] for c in page["connections"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"p{i}@localhost" for i in range(5)]
        r = await s.http.get("/v1/connections?cursor=bogus", headers=hub.headers)
        assert r.status_code == 400


def test_access_log_redacts_queue_and_request_ids():
    import logging

    from roost.server.observability.redaction import RedactionFilter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/v1/queues/q3Jabc_-/messages?after=3", "1.1", 200),
        None,
    )
    assert RedactionFilter().filter(record)
    assert "q3Jabc" not in record.getMessage() and "/v1/queues/…/messages" in record.getMessage()


async def test_queue_limit_is_counted_per_client_and_freed_by_a_delete(db_url):
    """The limit needs a count per client, not a list of its queues: it holds, per client, and
    deleting a queue (with its key) gives the allowance back."""
    from .conftest import make_config, running_server

    async with running_server(make_config(db_url, limits={"max_queues_per_client": 2})) as s:
        alice = await s.user("alice")
        bob = await s.user("bob")
        (q1, owner1), _ = await new_queue(s, alice), await new_queue(s, alice)
        r = await s.http.post("/v1/queues", headers=alice.headers)
        assert r.status_code == 409 and r.json()["code"] == "too_many_queues"
        await new_queue(s, bob)  # bob has his own allowance
        # a refused delete (no key) frees nothing; a delete with the key does
        assert (await s.http.delete(f"/v1/queues/{q1}", headers=alice.headers)).status_code == 403
        r = await s.http.post("/v1/queues", headers=alice.headers)
        assert r.status_code == 409
        assert (await s.http.delete(f"/v1/queues/{q1}", headers=owner1)).status_code == 204
        await new_queue(s, alice)
        r = await s.http.post("/v1/queues", headers=alice.headers)
        assert r.status_code == 409 and r.json()["code"] == "too_many_queues"
