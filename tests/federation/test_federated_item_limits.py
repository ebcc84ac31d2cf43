"""Limits of federated delivery items: items held for a remote joiner that exceed one outbox
item go as several items, in order; an inbox refuses for good (4xx, never retried) the items it
can never apply."""

from __future__ import annotations

import time

import httpx
import pytest

from roost.server.federation import signing
from roost.server.federation.outbox import BATCH_MEDIA_TYPE, INBOX_PATH, BatchItem, encode_batch

from ..e2e.helpers import sync_until
from .harness import Federation, Homeserver
from .test_as_flows import signing_key_of
from .test_ds_flows import TIMEOUT, connect, new

A, B = "a.test", "b.test"


@pytest.fixture(scope="module")
def pair(make_federation) -> Federation:
    """SQLite only (overrides the conftest's engine-parametrised pair)."""
    return make_federation(domains=(A, B))


async def test_a_remote_joiner_gets_held_items_larger_than_one_outbox_item(
    fed: Federation,
) -> None:
    """Items sent before a remote joiner registers its queue are held, then go to its server
    at registration: more than one outbox item holds (1 MiB) must not refuse the registration
    (413) — they go as several items, in order."""
    alice, bob = await new(fed, A, "alice"), await new(fed, B, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    texts = [f"{i}:" + "x" * 60_000 for i in range(20)]  # 1.2 MB held for bob's leaf
    for text in texts:
        await alice.groups.send(gid, text)
    await sync_until(bob, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while len(got := [m for _, m in bob.messages(gid)]) < len(texts):
        assert time.monotonic() < deadline, f"bob has {len(got)} of {len(texts)} messages"
        await bob.sync()
    assert got == texts, "all held messages arrive, once each, in order"


async def _post_batch(origin: Homeserver, dest: Homeserver, batch: bytes) -> httpx.Response:
    """A real signed inbox delivery, as ``origin``'s outbox worker sends it."""
    url = httpx.URL(dest.url + INBOX_PATH)
    wire = {
        "content-digest": signing.content_digest(batch),
        "roost-origin": origin.domain,
        "roost-destination": dest.domain,
        "content-type": BATCH_MEDIA_TYPE,
    }
    target = signing.Target("POST", url.raw_path.decode(), "")
    wire.update(signing.sign(await signing_key_of(origin), target, wire, created=int(time.time())))
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, content=batch, headers=wire)


async def test_inbox_refuses_items_it_can_never_apply(fed: Federation) -> None:
    """(Last in this module: it moves a.test's inbox mark on b.test far ahead.) A JSON item
    nested too deeply and an outbox id beyond the database's 64-bit signed range are refused
    for good (4xx), not answered 503 so that the sender retries them for ever."""
    deep = b'{"from":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    batch = encode_batch([BatchItem(10**12, "direct.message", deep)])
    r = await _post_batch(fed[A], fed[B], batch)
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == [{"id": 10**12, "code": "invalid_request"}]
    r = await _post_batch(fed[A], fed[B], encode_batch([BatchItem(2**63, "direct.message", b"{}")]))
    assert r.status_code == 400 and r.json()["code"] == "invalid_batch", r.text
