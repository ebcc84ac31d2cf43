"""The DS's resync rule over ASGI on both engines (docs/api.md "Resync"): an external commit
that removes the caller's own leaf is accepted with external joins off, keeps the member's
queue (no queue_id needed), policy and roles; any other removed leaf is 403 not_own_leaf."""

from __future__ import annotations

from roost.mls import Group
from roost.mls.credential import Credential
from roost.protocol.base64url import b64u
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.group_state import decode_group_state

from .delivery_helpers import Member, fetch, member, process_all, send
from .helpers import MLS, client_from, login, new_key
from .test_delivery_rules import trio


async def _resync_bundle(http, m: Member, gid: bytes, remove: int) -> tuple[Group, bytes]:  # type: ignore[no-untyped-def]
    r = await http.get(f"/v1/groups/{b64u(gid)}/group-info", headers=m.headers)
    assert r.status_code == 200, r.text
    state = decode_group_state(r.content)
    group, commit = Group.join_external(
        state.group_info,
        state.ratchet_tree,
        Credential.x509(m.client.credential),
        m.client.sig_priv,
        remove_prior=remove,
    )
    return group, encode_commit_bundle(commit, group.group_info(with_tree=True), None)


async def _post(http, m: Member, gid: bytes, body: bytes, **params: str):  # type: ignore[no-untyped-def]
    # A commit that names a queue registers it: the queue's key goes along.
    headers = m.queue_headers if "queue_id" in params else m.headers
    return await http.post(
        f"/v1/groups/{b64u(gid)}/commits",
        content=body,
        params=params,
        headers={**headers, **MLS},
    )


async def test_resync_keeps_queue_policy_and_roles_without_external_join(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    path = f"/v1/groups/{b64u(gid)}"
    r = await http.put(
        f"{path}/roles/{bob.user.user_id}", json={"role": "admin"}, headers=alice.headers
    )
    assert r.status_code == 204, r.text
    r = await http.put(f"{path}/policy", json={"policy": "mentions"}, headers=bob.headers)
    assert r.status_code == 204, r.text
    assert bob.group is not None
    old_leaf = bob.group.leaf_index
    group, body = await _resync_bundle(http, bob, gid, old_leaf)
    r = await _post(http, bob, gid, body)  # no queue_id: the old leaf's queue carries over
    assert r.status_code == 201, r.text
    assert r.json()["epoch"] == 2
    bob.group = group
    # The others get the commit; bob (the committer) does not.
    for m in (alice, carol):
        [got] = await process_all(http, m)
        assert got.kind == "commit" and got.removed == (old_leaf,)
    assert await fetch(http, bob) == []
    info = (await http.get(path, headers=bob.headers)).json()
    assert info["roles"][bob.user.user_id] == "admin" and info["my_leaf"] is not None
    # bob still reads from his queue, with his policy attached.
    r = await send(http, alice, gid, b"after the resync")
    assert r.status_code == 201, r.text
    [item] = await fetch(http, bob)
    assert item.policy == "mentions"
    assert bob.group.process(item.body).data == b"after the resync"


async def test_resync_of_another_leaf_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    assert carol.group is not None and bob.group is not None
    # bob's second client takes neither bob's leaf (same user) nor carol's.
    priv, pub, key = new_key(bob.user.user_id)
    r = await http.post(
        "/v1/clients",
        json={"user_id": bob.user.user_id, "password": bob.user.password, "client": key},
    )
    assert r.status_code == 201, r.text
    second = client_from(r.json(), priv, pub)
    await login(http, second)
    phone = await member(http, bob.user, second)
    r = await http.patch(
        f"/v1/groups/{b64u(gid)}", json={"external_join": True}, headers=alice.headers
    )
    assert r.status_code == 200, r.text
    for leaf in (bob.group.leaf_index, carol.group.leaf_index):
        _, body = await _resync_bundle(http, phone, gid, leaf)
        r = await _post(http, phone, gid, body, queue_id=phone.queue_id)
        assert r.status_code == 403 and r.json()["code"] == "not_own_leaf", r.text
    # With external joins off the same answer (not external_join_disabled): it names the rule.
    r = await http.patch(
        f"/v1/groups/{b64u(gid)}", json={"external_join": False}, headers=alice.headers
    )
    assert r.status_code == 200, r.text
    r = await _post(http, phone, gid, body, queue_id=phone.queue_id)
    assert r.status_code == 403 and r.json()["code"] == "not_own_leaf", r.text
    r = await http.get(f"/v1/groups/{b64u(gid)}", headers=alice.headers)
    assert r.json()["epoch"] == 1  # nothing was applied
