"""Welcomes without the ratchet tree against a real homeserver process (SQLite and
PostgreSQL): the joiner fetches the tree from the DS and joins with it after the same checks
as for a tree in the Welcome; a Welcome it cannot use is reported as ``welcome_failed``, and
one for another of the user's clients is passed over silently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from roost.client.credential_policy import member_client_id
from roost.client.group_key import GROUP_KEY_WRAP_HEADER, wrap_group_key, wrap_key_of
from roost.client.groups import GroupEvent, group_path
from roost.mls.framing import MLSMessage
from roost.mls.group import CommitOutput, Group
from roost.mls.key_package import KeyPackage
from roost.mls.welcome import Welcome
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.media_types import MLS_MEDIA_TYPE

from .helpers import Member, connect, new_member, second_member, sync_all


async def _welcome_in_direct_queue(m: Member) -> bytes:
    """The payload of the last Welcome waiting in ``m``'s direct queue (not acked)."""
    page = await m.client.fetch_direct(m.groups.store.cursors.direct_after)
    [payload] = [e.payload for e in page.events if e.type == "welcome" and e.payload][-1:]
    return payload


def _wrap(m: Member, group_id: bytes) -> str:
    """The group's key wrapped for the epoch of ``m``'s pending commit (its joiners')."""
    key = m.groups.group_key(group_id)
    assert key is not None
    export = m.groups.group(group_id).pending_export_secret
    return wrap_group_key(key, group_id, wrap_key_of(export, group_id))


async def _submit(
    m: Member,
    group_id: bytes,
    out: CommitOutput,
    welcome: bytes | None,
    wrap: str | None = None,
) -> None:
    """Submit ``out``'s commit with ``welcome`` (as a client that builds its own bundle) and
    the group key ``wrap`` (by default: for the epoch ``out`` makes)."""
    headers = m.groups.key_headers(group_id)
    if welcome is not None:
        headers[GROUP_KEY_WRAP_HEADER] = wrap or _wrap(m, group_id)
    await m.client.request(
        "POST",
        f"/v1/groups/{group_path(group_id)}/commits",
        content=encode_commit_bundle(out.commit, out.group_info, welcome),
        content_type=MLS_MEDIA_TYPE,
        headers=headers,
    )
    m.groups.group(group_id).merge_pending_commit()


def _carries_tree(m: Member, welcome: bytes) -> bool:
    """Open ``welcome`` with ``m``'s KeyPackage keys: does its GroupInfo carry the tree?"""
    body = MLSMessage.decode(welcome).body
    assert isinstance(body, Welcome)
    keys = m.client.state.keypackages
    [s] = [keys[e.new_member.hex()] for e in body.secrets if e.new_member.hex() in keys]
    opened = Group.open_welcome(
        body,
        (
            KeyPackage.decode(s.key_package),
            s.init_private,
            s.encryption_private,
            m.client.state.signature_private,
        ),
    )
    return opened.opened.carries_ratchet_tree


async def test_welcome_without_tree_joins_with_the_tree_from_the_ds(users):
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    carol = await new_member(users, "carol")
    await connect(alice, bob)
    await connect(alice, carol)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [carol.user_id])  # a group of three: a tree worth checking
    await sync_all(carol)
    await alice.groups.invite(gid, [bob.user_id], ratchet_tree_in_welcome=False)
    assert not _carries_tree(bob, await _welcome_in_direct_queue(bob))

    await bob.sync()
    assert [(e.kind, e.group_id) for e in bob.seen] == [("joined", gid)], bob.seen
    await sync_all(carol)
    await alice.groups.send(gid, "hello bob")
    await bob.groups.send(gid, "hello all")
    await sync_all(alice, bob, carol)
    assert bob.messages(gid) == [(alice.client_id, "hello bob")]
    assert alice.messages(gid) == [(bob.client_id, "hello all")]
    assert carol.messages(gid)[-2:] == [
        (alice.client_id, "hello bob"),
        (bob.client_id, "hello all"),
    ]
    epochs = {
        (m.groups.group(gid).epoch, m.groups.group(gid).epoch_authenticator)
        for m in (alice, bob, carol)
    }
    assert len(epochs) == 1


async def test_welcome_whose_tree_from_the_ds_does_not_match_is_reported(users):
    """A bad inviter submits one commit but sends the Welcome of another commit of the same
    epoch (a different path, so a different tree): the DS's tree fails the Welcome's tree-hash
    check. Bob is told, once, and holds no group."""
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    [kp] = await alice.client.claim_key_packages(bob.user_id)
    group = alice.groups.group(gid)
    stray = group.commit(add=[kp], force_path=True, ratchet_tree_in_welcome=False)
    stray_wrap = _wrap(alice, gid)  # the key opens for bob: the tree is what fails
    group.clear_pending_commit()
    real = group.commit(add=[kp], force_path=True, ratchet_tree_in_welcome=False)
    assert stray.welcome is not None
    await _submit(alice, gid, real, stray.welcome, stray_wrap)

    events = await bob.sync()
    assert [(e.kind, e.group_id, e.sender) for e in events] == [
        ("welcome_failed", gid, alice.user_id)
    ], events
    assert "does not match the GroupContext tree_hash" in events[0].text, events[0].text
    assert not bob.groups.store.holds(gid)
    assert await bob.sync() == []  # acked: reported once
    assert [e.kind for e in bob.groups.history.entries(gid)] == ["commit"]
    assert "tree_hash" in bob.groups.history.entries(gid)[0].text


async def test_welcome_that_fails_to_decrypt_with_our_key_package_is_reported(users):
    """The Welcome names bob's KeyPackage but its ciphertext was damaged: not for another
    client, so bob is told instead of the Welcome being passed over."""
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    [kp] = await alice.client.claim_key_packages(bob.user_id)
    out = alice.groups.group(gid).commit(add=[kp])
    assert out.welcome is not None
    body = MLSMessage.decode(out.welcome).body
    assert isinstance(body, Welcome)
    egi = bytearray(body.encrypted_group_info)
    egi[-1] ^= 1
    damaged = MLSMessage(replace(body, encrypted_group_info=bytes(egi))).encode()
    await _submit(alice, gid, out, damaged)

    events = await bob.sync()
    assert [(e.kind, e.group_id) for e in events] == [("welcome_failed", gid)], events
    assert "cannot open the Welcome" in events[0].text, events[0].text
    assert await bob.sync() == []


async def test_welcome_for_a_member_removed_before_joining_is_reported(users):
    """Added without the tree, then removed before the first sync: the DS refuses the tree
    (not_member); bob sees why instead of nothing."""
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id], ratchet_tree_in_welcome=False)
    await alice.groups.remove(gid, bob.user_id)
    events = await bob.sync()
    assert [(e.kind, e.group_id) for e in events] == [("welcome_failed", gid)], events
    assert "not_member" in events[0].text
    assert await bob.sync() == []


async def test_welcome_for_another_client_is_passed_over_and_joined_by_it(users):
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    bob_phone = await second_member(users, bob)
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    kps = await alice.client.claim_key_packages(bob.user_id)
    [phone_kp] = [k for k in kps if member_client_id(k.leaf_node.credential) == bob_phone.client_id]
    out = alice.groups.group(gid).commit(add=[phone_kp], ratchet_tree_in_welcome=False)
    await _submit(alice, gid, out, out.welcome)

    assert await bob.sync() == []  # not for this client: silently passed over
    assert await bob.sync() == []
    assert not bob.groups.store.holds(gid)
    await bob_phone.sync()
    assert [(e.kind, e.group_id) for e in bob_phone.seen] == [("joined", gid)]
    await alice.groups.send(gid, "hi phone")
    await bob_phone.sync()
    assert bob_phone.messages(gid) == [(alice.client_id, "hi phone")]


async def test_welcome_whose_epoch_the_group_left_joins_in_place_of_its_leaf(users):
    """The DS keeps only the latest tree: once the group moved on, a Welcome without the tree
    cannot be used as such, so bob joins by an external commit in place of the leaf the
    Welcome's commit added for him (the resync rule), and the group goes on with him."""
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id], ratchet_tree_in_welcome=False)
    await alice.groups.update(gid)
    events = await bob.sync()
    assert [(e.kind, e.group_id) for e in events] == [("joined", gid)], events
    assert "epoch had passed" in events[0].text, events[0].text
    assert bob.groups.group(gid).epoch == 3
    [rejoined] = [e for e in await alice.sync() if e.kind == "commit"]
    assert "rejoined" in rejoined.text and rejoined.sender.startswith(bob.user_id + "/")
    assert alice.groups.group(gid).epoch_authenticator == (
        bob.groups.group(gid).epoch_authenticator
    )
    await bob.groups.send(gid, "made it")
    await alice.sync()
    assert alice.messages(gid) == [(bob.client_id, "made it")]


async def _until(pred: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_welcomes_pushed_over_the_websocket_join_or_are_reported(users):
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    good = (await alice.groups.create()).group_id
    bad = (await alice.groups.create()).group_id
    seen: list[GroupEvent] = []
    stop = asyncio.Event()
    task = asyncio.create_task(bob.groups.listen(seen.append, stop=stop))
    try:
        await _until(lambda: bob.groups.realtime is not None and bool(bob.groups.realtime.ready))
        await alice.groups.invite(good, [bob.user_id], ratchet_tree_in_welcome=False)
        await _until(lambda: any(e.kind == "joined" for e in seen))
        await alice.groups.send(good, "pushed")
        await _until(lambda: any(e.kind == "message" for e in seen))

        [kp] = await alice.client.claim_key_packages(bob.user_id)
        group = alice.groups.group(bad)
        stray = group.commit(add=[kp], force_path=True, ratchet_tree_in_welcome=False)
        stray_wrap = _wrap(alice, bad)
        group.clear_pending_commit()
        real = group.commit(add=[kp], force_path=True, ratchet_tree_in_welcome=False)
        await _submit(alice, bad, real, stray.welcome, stray_wrap)
        await _until(lambda: any(e.kind == "welcome_failed" for e in seen))
    finally:
        stop.set()
        await task
    assert [(e.kind, e.group_id) for e in seen] == [
        ("joined", good),
        ("message", good),
        ("welcome_failed", bad),
    ]
    assert seen[1].message == "pushed"
