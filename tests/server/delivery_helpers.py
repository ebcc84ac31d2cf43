"""Test-side helpers for the Delivery Service: MLS members driving the HTTP API."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field

import httpx

from roost.mls import Group
from roost.mls.credential import Credential
from roost.mls.extension_types import ExternalSender, ExternalSenders
from roost.mls.key_package_gen import generate_key_package
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.group_state import encode_group_state
from roost.protocol.message_batch import decode_message_batch
from roost.protocol.queue_item import QueueItem, decode_queue_item

from .helpers import DOMAIN, MLS, TestClient, TestUser

QUEUE_KEY = "Roost-Queue-Key"


@dataclass
class Member:
    """One client in one group: its MLS state, its queue (id and key) and what it has read."""

    user: TestUser
    client: TestClient
    queue_id: str
    queue_key: str
    group: Group | None = None
    after: int = 0
    seen: list[QueueItem] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return self.client.headers

    @property
    def queue_headers(self) -> dict[str, str]:
        """The bearer token plus the queue's key: what an owner operation or a request that
        registers the queue with the DS carries."""
        return {**self.client.headers, QUEUE_KEY: self.queue_key}


def new_group_id() -> bytes:
    return f"{b64u(secrets.token_bytes(16))}@{DOMAIN}".encode()


async def new_queue(http: httpx.AsyncClient, client: TestClient) -> tuple[str, str]:
    """A new group-message queue: (queue id, queue key)."""
    r = await http.post("/v1/queues", headers=client.headers)
    assert r.status_code == 201, r.text
    return r.json()["queue_id"], r.json()["queue_key"]


async def external_sender(http: httpx.AsyncClient, suite: int = 1) -> ExternalSender:
    r = await http.get("/v1/ds/external-sender", params={"cipher_suite": suite})
    assert r.status_code == 200, r.text
    return ExternalSender.decode(unb64u(r.json()["external_sender"]))


async def member(
    http: httpx.AsyncClient, user: TestUser, client: TestClient | None = None
) -> Member:
    client = client or user.client
    return Member(user, client, *await new_queue(http, client))


async def create_group(
    http: httpx.AsyncClient,
    creator: Member,
    *,
    external_join: bool = False,
    with_server: bool = True,
    group_id: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[bytes, httpx.Response]:
    """Create a group with the creator's queue; ``headers`` replaces the creator's token and
    queue key (to try other credentials)."""
    gid = group_id or new_group_id()
    exts = []
    if with_server:
        es = await external_sender(http, creator.client.cipher_suite)
        exts.append(ExternalSenders((es,)).to_extension())
    creator.group = Group.create(
        creator.client.cipher_suite,
        Credential.x509(creator.client.credential),
        creator.client.sig_priv,
        group_id=gid,
        extensions=exts,
    )
    body = encode_group_state(creator.group.group_info(with_tree=True), b"\x00")
    r = await http.post(
        "/v1/groups",
        params={"queue_id": creator.queue_id, "external_join": str(external_join).lower()},
        content=body,
        headers={**(creator.queue_headers if headers is None else headers), **MLS},
    )
    return gid, r


def kp_bundle(m: Member):  # type: ignore[no-untyped-def]
    return generate_key_package(
        m.client.cipher_suite, Credential.x509(m.client.credential), m.client.sig_priv
    )


async def post_commit(
    http: httpx.AsyncClient,
    committer: Member,
    gid: bytes,
    out,  # type: ignore[no-untyped-def]
    *,
    queue_id: str | None = None,
) -> httpx.Response:
    body = encode_commit_bundle(out.commit, out.group_info, out.welcome)
    # Naming a queue registers it: its key goes along (the committer's own queue here).
    params = {"queue_id": queue_id} if queue_id else {}
    headers = committer.queue_headers if queue_id else committer.headers
    return await http.post(
        f"/v1/groups/{b64u(gid)}/commits",
        content=body,
        params=params,
        headers={**headers, **MLS},
    )


async def send(
    http: httpx.AsyncClient, m: Member, gid: bytes, data: bytes, message_id: str | None = None
) -> httpx.Response:
    assert m.group is not None
    msg = m.group.encrypt(data)
    return await send_raw(http, m, gid, msg, message_id)


async def send_raw(
    http: httpx.AsyncClient, m: Member, gid: bytes, msg: bytes, message_id: str | None = None
) -> httpx.Response:
    return await http.post(
        f"/v1/groups/{b64u(gid)}/messages",
        content=msg,
        headers={**m.headers, **MLS, "Roost-Message-Id": message_id or secrets.token_hex(8)},
    )


async def fetch(http: httpx.AsyncClient, m: Member) -> list[QueueItem]:
    r = await http.get(
        f"/v1/queues/{m.queue_id}/messages", params={"after": m.after}, headers=m.queue_headers
    )
    assert r.status_code == 200, r.text
    items = []
    for seq, payload in decode_message_batch(r.content):
        m.after = seq
        items.append(decode_queue_item(payload))
    m.seen += items
    return items


async def welcomes(http: httpx.AsyncClient, client: TestClient) -> list[dict]:
    r = await http.get("/v1/direct/messages", headers=client.headers)
    assert r.status_code == 200, r.text
    events = [json.loads(p) for _, p in decode_message_batch(r.content)]
    return [e for e in events if e["type"] == "welcome"]


def welcome_bytes(event: dict) -> bytes:
    return base64.urlsafe_b64decode(event["payload"] + "=" * (-len(event["payload"]) % 4))


async def connect(http: httpx.AsyncClient, a: TestUser, b: TestUser) -> None:
    r = await http.post("/v1/connections", json={"to": b.user_id}, headers=a.headers)
    assert r.status_code == 201, r.text
    cid = r.json()["connection_id"]
    r = await http.post(
        f"/v1/connections/{cid}/request", content=b"\x00", headers={**a.headers, **MLS}
    )
    assert r.status_code == 200, r.text
    r = await http.post(f"/v1/connections/{cid}/accept", headers=b.headers)
    assert r.status_code == 200, r.text


async def add_members(
    http: httpx.AsyncClient, committer: Member, gid: bytes, joiners: list[Member]
) -> httpx.Response:
    """Commit Adds of the joiners, let each join from the Welcome and register its queue."""
    assert committer.group is not None
    bundles = [kp_bundle(j) for j in joiners]
    out = committer.group.commit(add=[b.key_package for b in bundles])
    r = await post_commit(http, committer, gid, out)
    if r.status_code != 201:
        committer.group.clear_pending_commit()
        return r
    committer.group.merge_pending_commit()
    for j, bundle in zip(joiners, bundles, strict=True):
        j.group = Group.join_from_welcome(out.welcome, bundle)
        q = await register_queue(http, j, gid)
        assert q.status_code == 204, q.text
    return r


async def register_queue(http: httpx.AsyncClient, m: Member, gid: bytes) -> httpx.Response:
    """Register the member's queue with the group after a Welcome (key header included)."""
    return await http.put(
        f"/v1/groups/{b64u(gid)}/queue", json={"queue_id": m.queue_id}, headers=m.queue_headers
    )


async def process_all(http: httpx.AsyncClient, m: Member) -> list:  # type: ignore[type-arg]
    """Fetch and process every MLS item with the member's group; returns what process gave."""
    out = []
    for item in await fetch(http, m):
        if item.item_type == 1:
            assert m.group is not None
            out.append(m.group.process(item.body))
        else:
            out.append(item)
    return out
