"""Group keys on the client side: the wrap a committer sends with a Welcome opens with the
joiner's exporter of the epoch the Welcome joins (before and after the tree is at hand) and
with nothing else (another epoch, another group id, a tampered wrap); keys are kept per group
in the home, survive a restart, go when the membership ends and stay out of reprs."""

from __future__ import annotations

import json
import time

import pytest

from roost.client import ClientState, GroupQueue, Home, RoostClient
from roost.client.group_key import (
    GROUP_KEY_HEADER,
    WRAP_BYTES,
    GroupKeyError,
    key_headers,
    new_group_key,
    parse_group_key,
    unwrap_group_key,
    wrap_group_key,
    wrap_key_of,
)
from roost.client.group_store import GroupStore
from roost.client.models import DirectEvent, QueueMessage
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.group import Group
from roost.mls.key_package_gen import generate_key_package
from roost.protocol.base64url import b64u, unb64u

SUITE = 1
GID = b"group-one@localhost"


def _member(name: bytes, group_id: bytes = GID) -> Group:
    cs = get_cipher_suite(SUITE)
    priv, _ = cs.generate_signature_key_pair()
    return Group.create(SUITE, Credential.basic(name), priv, group_id=group_id)


def _kp(name: bytes):
    cs = get_cipher_suite(SUITE)
    priv, _ = cs.generate_signature_key_pair()
    return generate_key_package(SUITE, Credential.basic(name), priv)


def test_wrap_round_trip_and_its_size():
    key, wrap_key = new_group_key(), new_group_key()
    wrap = wrap_group_key(key, GID, wrap_key)
    assert len(unb64u(wrap)) == WRAP_BYTES == 60
    assert unwrap_group_key(wrap, GID, wrap_key) == key
    assert wrap_group_key(key, GID, wrap_key) != wrap  # a fresh nonce each time


def test_unwrap_fails_for_another_group_id_key_or_a_tampered_wrap():
    key, wrap_key = new_group_key(), new_group_key()
    wrap = wrap_group_key(key, GID, wrap_key)
    with pytest.raises(GroupKeyError, match="does not open"):
        unwrap_group_key(wrap, b"other@localhost", wrap_key)
    with pytest.raises(GroupKeyError, match="does not open"):
        unwrap_group_key(wrap, GID, new_group_key())
    raw = bytearray(unb64u(wrap))
    raw[20] ^= 1
    with pytest.raises(GroupKeyError, match="does not open"):
        unwrap_group_key(b64u(bytes(raw)), GID, wrap_key)
    with pytest.raises(GroupKeyError, match="not 60"):
        unwrap_group_key(b64u(bytes(raw[:59])), GID, wrap_key)


def test_the_committers_wrap_opens_with_the_joiners_exporter_of_the_new_epoch():
    alice = _member(b"alice")
    bob = _kp(b"bob")
    key = new_group_key()
    old_epoch_wrap_key = wrap_key_of(alice.export_secret, GID)
    out = alice.commit(add=[bob.key_package], ratchet_tree_in_welcome=False)
    assert out.welcome is not None
    wrap = wrap_group_key(key, GID, wrap_key_of(alice.pending_export_secret, GID))
    alice.merge_pending_commit()
    # The committer's pending exporter is the new epoch's: the same after the merge.
    assert wrap_key_of(alice.export_secret, GID) != old_epoch_wrap_key
    assert unwrap_group_key(wrap, GID, wrap_key_of(alice.export_secret, GID)) == key

    # The joiner unwraps right after opening the Welcome, before it has the tree …
    opened = Group.open_welcome(out.welcome, bob)
    assert unwrap_group_key(wrap, GID, wrap_key_of(opened.export_secret, GID)) == key
    # … and its joined group's exporter is the same.
    joined = Group.join_opened(opened, alice.tree.to_bytes())
    assert unwrap_group_key(wrap, GID, wrap_key_of(joined.export_secret, GID)) == key


def test_a_wrap_for_another_epoch_or_group_does_not_open():
    alice = _member(b"alice")
    bob = _kp(b"bob")
    key = new_group_key()
    # Wrapped (wrongly) with the epoch before the commit: the joiner cannot open it.
    stale = wrap_group_key(key, GID, wrap_key_of(alice.export_secret, GID))
    out = alice.commit(add=[bob.key_package])
    assert out.welcome is not None
    opened = Group.open_welcome(out.welcome, bob)
    with pytest.raises(GroupKeyError):
        unwrap_group_key(stale, GID, wrap_key_of(opened.export_secret, GID))
    # Another group's exporter (same label, its own group id) does not open it either.
    other = _member(b"alice", b"group-two@localhost")
    right = wrap_group_key(key, GID, wrap_key_of(alice.pending_export_secret, GID))
    with pytest.raises(GroupKeyError):
        unwrap_group_key(right, GID, wrap_key_of(other.export_secret, GID))


def test_pending_export_needs_a_pending_commit():
    alice = _member(b"alice")
    with pytest.raises(Exception, match="no pending commit"):
        alice.pending_export_secret(b"roost group key", GID, 32)


def test_parse_group_key_and_headers():
    key = new_group_key()
    assert parse_group_key(b64u(key)) == key
    assert parse_group_key(b64u(key) + "=") == key
    with pytest.raises(GroupKeyError, match="32 bytes"):
        parse_group_key(b64u(key[:16]))
    with pytest.raises(GroupKeyError, match="base64url"):
        parse_group_key("not base64!")
    assert key_headers(key) == {GROUP_KEY_HEADER: b64u(key)}
    assert key_headers(None) == {}


def test_a_welcome_events_key_wrap_is_read_and_kept_out_of_its_repr():
    wrap = b64u(b"w" * 60)
    payload = {"type": "welcome", "from": "a@localhost", "payload": b64u(b"W")}
    event = DirectEvent.from_message(
        QueueMessage(3, json.dumps({**payload, "group_key_wrap": wrap}).encode())
    )
    assert event.group_key_wrap == wrap and wrap not in repr(event)
    legacy = DirectEvent.from_message(QueueMessage(4, json.dumps(payload).encode()))
    assert legacy.group_key_wrap is None


def _client(home: Home) -> RoostClient:
    state = ClientState(server="http://127.0.0.1:1", signature_private=b"\x01" * 32)
    state.client_id = "a@localhost/c"
    state.token = "tok"
    state.token_expires_at = time.time() + 3600
    return RoostClient(state, home=home)


async def test_keys_are_kept_per_group_across_a_restart_and_go_with_the_membership(tmp_path):
    client = _client(Home(tmp_path))
    store = GroupStore(client)
    one, two, legacy = b"one@localhost", b"two@localhost", b"old@localhost"
    k1, k2 = new_group_key(), new_group_key()
    store.set_group_key(one, k1)
    store.set_group_key(two, k2)
    store.set_queue(one, GroupQueue("q" * 22, "k" * 43))
    store.save_cursors()
    saved = json.loads((tmp_path / "group_client.json").read_text())
    assert saved["group_keys"] == {b64u(one): b64u(k1), b64u(two): b64u(k2)}
    assert b64u(k1) not in repr(store.cursors)

    again = GroupStore(client)  # a restart reads them back
    assert again.group_key(one) == k1 and again.key_headers(two) == key_headers(k2)
    assert again.group_key(legacy) is None and again.key_headers(legacy) == {}
    again.set_group_key(one, None)  # a Welcome without a wrap keeps the key held
    assert again.group_key(one) == k1

    again.forget(one)  # the membership ended: its key goes with its queue
    again.save_cursors()
    third = GroupStore(client)
    assert third.group_key(one) is None and third.group_key(two) == k2
    assert "q" * 22 in third.cursors.retired
    await client.aclose()


async def test_a_home_from_before_group_keys_loads_with_none(tmp_path):
    (tmp_path / "group_client.json").write_text(json.dumps({"queue_id": "", "direct_after": 2}))
    client = _client(Home(tmp_path))
    store = GroupStore(client)
    assert store.cursors.group_keys == {} and store.cursors.direct_after == 2
    await client.aclose()
