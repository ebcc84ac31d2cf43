"""Roost <-> Wire's core-crypto (WASM build, in Node): one group, both directions.

core-crypto refuses members whose basic credential identity is not a Wire client id, so every
Roost member here is named by ``wire_client_id``. It joins only from Welcomes that carry the
ratchet tree, so Roost inviters set ``ratchet_tree_extension``. Agreement is checked through
what core-crypto exposes: epoch, member identities and its fixed-label exporter secret; a
roost GroupObserver (the DS's view) follows every commit and matches the Roost members.
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "roost.mls.group", reason="roost.mls.group (member Group, GroupObserver) not present"
)

from .corecrypto_peer import CoreCryptoPeer, wire_client_id  # noqa: E402
from .corecrypto_scenario import Member, agree, leaf_of, roost  # noqa: E402
from .peer import PeerError, PeerUnsupported, PublicGroupState  # noqa: E402
from .roost_lifecycle import new_group_id  # noqa: E402
from .roost_peer import Homeserver, ObserverTap, RoostPeer  # noqa: E402
from .scenario import check_bundle, deliver_commit, key_package, send_application  # noqa: E402


def test_roost_creates_corecrypto_joins() -> None:
    alice, bob, carol = roost(b"alice"), CoreCryptoPeer(b"bob"), roost(b"carol")
    gid = new_group_id("cc-rc")
    tap = ObserverTap(alice.create_group(gid))
    add = alice.add_members(gid, [key_package(bob)])
    check_bundle(add, adds=True)
    tap.apply(add.commit, add)
    assert bob.join(add.welcome) == gid
    assert agree(gid, [alice, bob], tap) == 1

    send_application(alice, gid, [bob], b"hello from roost")
    send_application(bob, gid, [alice], b"hello from core-crypto")
    for committer, receiver in ((bob, alice), (alice, bob)):
        upd = committer.self_update(gid)
        check_bundle(upd, adds=False)
        deliver_commit(upd, committer, [receiver], tap.apply)
    assert agree(gid, [alice, bob], tap) == 3

    # core-crypto invites a Roost member: its Welcome carries the tree, none travels aside.
    add3 = bob.add_members(gid, [key_package(carol)])
    check_bundle(add3, adds=True)
    assert add3.ratchet_tree is None
    deliver_commit(add3, bob, [alice], tap.apply)
    assert carol.join(add3.welcome) == gid
    everyone: list[Member] = [alice, bob, carol]
    assert agree(gid, everyone, tap) == 4
    for sender in everyone:
        send_application(sender, gid, everyone, b"three members, from " + sender.name.encode())

    # Roost removes the core-crypto member, which learns it was removed.
    rm = alice.remove(gid, leaf_of(gid, alice, bob))
    got = bob.process(rm.commit)
    assert got.kind == "commit" and got.removed
    deliver_commit(rm, alice, [carol], tap.apply)
    assert agree(gid, [alice, carol], tap) == 5
    send_application(carol, gid, [alice], b"after the removal")


def test_corecrypto_creates_roost_joins() -> None:
    alice, bob = CoreCryptoPeer(b"alice"), roost(b"bob")
    carol, dave = CoreCryptoPeer(b"carol"), roost(b"dave")
    gid = new_group_id("cc-oc")
    created = alice.create_group(gid)
    assert created.group_info is None  # core-crypto hands out GroupInfo only with commits
    add = alice.add_members(gid, [key_package(bob)])
    check_bundle(add, adds=True)
    # The DS starts from the GroupInfo in core-crypto's commit bundle (tree inside it).
    assert add.group_info is not None
    tap = ObserverTap(PublicGroupState(add.group_info, b""))
    assert bob.join(add.welcome) == gid
    assert agree(gid, [alice, bob], tap) == 1

    send_application(bob, gid, [alice], b"hello from roost")
    send_application(alice, gid, [bob], b"hello from core-crypto")
    for committer, receiver in ((bob, alice), (alice, bob)):
        upd = committer.self_update(gid)
        deliver_commit(upd, committer, [receiver], tap.apply)
    assert agree(gid, [alice, bob], tap) == 3

    # Roost invites a second core-crypto client; core-crypto invites a second Roost client.
    add3 = bob.add_members(gid, [key_package(carol)])
    deliver_commit(add3, bob, [alice], tap.apply)
    assert carol.join(add3.welcome) == gid
    add4 = carol.add_members(gid, [key_package(dave)])
    deliver_commit(add4, carol, [alice, bob], tap.apply)
    assert dave.join(add4.welcome) == gid
    everyone: list[Member] = [alice, bob, carol, dave]
    assert agree(gid, everyone, tap) == 5
    for sender in everyone:
        send_application(sender, gid, everyone, b"four members, from " + sender.name.encode())

    # core-crypto removes a Roost member (by client id, its only way to name members).
    rm = alice.remove_identity(gid, bob.identity)
    got = bob.process(rm.commit)
    assert got.kind == "commit" and got.removed
    rest: list[Member] = [alice, carol, dave]
    deliver_commit(rm, alice, rest, tap.apply)
    assert agree(gid, rest, tap) == 6
    for sender in rest:
        send_application(sender, gid, rest, b"after the removal")


@pytest.mark.parametrize("roost_creates", [True, False], ids=["roost-adds-10", "cc-adds-10"])
def test_add_ten_in_one_commit(roost_creates: bool) -> None:
    creator: Member = roost(b"alice") if roost_creates else CoreCryptoPeer(b"alice")
    joiners: list[Member] = [
        CoreCryptoPeer(b"m%d" % i) if roost_creates else roost(b"m%d" % i) for i in range(10)
    ]
    gid = new_group_id("cc-many")
    creator.create_group(gid)
    add = creator.add_members(gid, [key_package(j) for j in joiners])
    for j in joiners:
        assert j.join(add.welcome) == gid
    everyone = [creator, *joiners]
    assert agree(gid, everyone) == 1
    upd = joiners[5].self_update(gid)
    deliver_commit(upd, joiners[5], everyone)
    assert agree(gid, everyone) == 2
    send_application(joiners[-1], gid, everyone, b"eleven members")


def test_corecrypto_joins_roost_group_by_external_commit() -> None:
    alice, bob, erin = roost(b"alice"), CoreCryptoPeer(b"bob"), CoreCryptoPeer(b"erin")
    gid = new_group_id("cc-ext")
    alice.create_group(gid)
    add = alice.add_members(gid, [key_package(bob)])
    bob.join(add.welcome)
    # core-crypto takes no tree out of band: the GroupInfo carries it (and external_pub).
    served = alice.groups[gid].group_info(with_tree=True)
    tap = ObserverTap(PublicGroupState(served, alice.groups[gid].tree.to_bytes()))
    joined, bundle = erin.join_external(served)
    assert joined == gid
    check_bundle(bundle, adds=False)
    deliver_commit(bundle, erin, [alice, bob], tap.apply)
    everyone: list[Member] = [alice, bob, erin]
    assert agree(gid, everyone, tap) == 2
    for sender in everyone:
        send_application(sender, gid, everyone, b"after the external join")


def test_roost_joins_corecrypto_group_by_external_commit() -> None:
    alice, bob, erin = CoreCryptoPeer(b"alice"), roost(b"bob"), roost(b"erin")
    gid = new_group_id("cc-ext")
    alice.create_group(gid)
    add = alice.add_members(gid, [key_package(bob)])
    bob.join(add.welcome)
    upd = alice.self_update(gid)
    deliver_commit(upd, alice, [bob])
    # The GroupInfo in core-crypto's latest commit bundle is what its DS would serve.
    assert upd.group_info is not None
    joined, bundle = erin.join_external(upd.group_info)
    assert joined == gid
    deliver_commit(bundle, erin, [alice, bob])
    everyone: list[Member] = [alice, bob, erin]
    assert agree(gid, everyone) == 3
    for sender in everyone:
        send_application(sender, gid, everyone, b"after the external join")


def test_homeserver_remove_proposal_committed_by_corecrypto() -> None:
    """Roost's homeserver, the group's external sender, proposes removing a member; the
    core-crypto member commits the proposal and everyone follows."""
    server = Homeserver()
    alice, bob, carol = roost(b"alice"), CoreCryptoPeer(b"bob"), roost(b"carol")
    gid = new_group_id("cc-hs")
    tap = ObserverTap(alice.create_group(gid, [server.extension]))
    add = alice.add_members(gid, [key_package(bob), key_package(carol)])
    tap.apply(add.commit, add)
    for p in (bob, carol):
        assert p.join(add.welcome) == gid
    proposal = server.remove(tap, leaf_of(gid, alice, carol))
    tap.apply_proposal(proposal)
    for p in (alice, bob, carol):
        assert p.process(proposal).kind == "proposal", p.name
    bundle = bob.commit_pending(gid)
    assert carol.process(bundle.commit).removed
    deliver_commit(bundle, bob, [alice], tap.apply)
    assert agree(gid, [alice, bob], tap) == 2


def test_corecrypto_group_with_homeserver_as_external_sender() -> None:
    """core-crypto creates a group naming Roost's homeserver key as external sender; the
    homeserver's Remove proposal is then committed by a Roost member."""
    server = Homeserver()
    alice, bob, carol = CoreCryptoPeer(b"alice"), roost(b"bob"), roost(b"carol")
    gid = new_group_id("cc-hs")
    alice.create_group(gid, external_sender_key=server.signature_key)
    add = alice.add_members(gid, [key_package(bob), key_package(carol)])
    assert add.group_info is not None
    tap = ObserverTap(PublicGroupState(add.group_info, b""))
    for p in (bob, carol):
        assert p.join(add.welcome) == gid
    proposal = server.remove(tap, leaf_of(gid, bob, alice))
    tap.apply_proposal(proposal)
    for p in (alice, bob, carol):
        assert p.process(proposal).kind == "proposal", p.name
    bundle = bob.commit_pending(gid)
    assert alice.process(bundle.commit).removed
    deliver_commit(bundle, bob, [carol], tap.apply)
    assert agree(gid, [bob, carol], tap) == 2


def test_corecrypto_rejects_tampered_roost_messages() -> None:
    alice, bob = roost(b"alice"), CoreCryptoPeer(b"bob")
    gid = new_group_id("cc-tamper")
    alice.create_group(gid)
    bob.join(alice.add_members(gid, [key_package(bob)]).welcome)
    msg = alice.encrypt(gid, b"genuine")
    for i in (len(msg) - 1, len(msg) - 20, 30):
        with pytest.raises(PeerError):
            bob.process(_flip(msg, i))
    assert bob.process(msg).data == b"genuine"
    upd = alice.self_update(gid)
    with pytest.raises(PeerError):
        bob.process(_flip(upd.commit, len(upd.commit) - 5))  # inside the membership tag
    deliver_commit(upd, alice, [bob])
    assert agree(gid, [alice, bob]) == 2


def test_application_edge_cases() -> None:
    """Out-of-order delivery within an epoch, empty and 100 KiB payloads, Roost padding, and a
    Roost restart (state persisted and restored) between messages.

    core-crypto 10.3.0 accepts a message at most one generation older than the newest it has
    decrypted ("DuplicateMessage" otherwise; the same between two
    core-crypto clients); Roost takes any order within its window."""
    alice, bob = roost(b"alice"), CoreCryptoPeer(b"bob")
    gid = new_group_id("cc-app")
    alice.create_group(gid)
    assert bob.join(alice.add_members(gid, [key_package(bob)]).welcome) == gid
    orders = {alice: (3, 0, 4, 2, 1), bob: (1, 0, 3, 2, 4)}
    for sender, receiver in ((bob, alice), (alice, bob)):
        msgs = [sender.encrypt(gid, b"message %d" % i) for i in range(5)]
        for i in orders[receiver]:  # later generations first: the receiver ratchets ahead
            assert receiver.process(msgs[i]).data == b"message %d" % i
        for payload in (b"", bytes(range(256)) * 400):
            assert receiver.process(sender.encrypt(gid, payload)).data == payload
    assert bob.process(alice.encrypt(gid, b"padded", padding=256)).data == b"padded"
    alice.reload(gid)
    send_application(bob, gid, [alice], b"after the restart")
    deliver_commit(bob.self_update(gid), bob, [alice])
    alice.reload(gid)
    send_application(alice, gid, [bob], b"restored state, new epoch")
    assert agree(gid, [alice, bob]) == 2


def test_corecrypto_out_of_order_window_is_one_generation() -> None:
    """Pinned (docs/interop.md): after generation 3, core-crypto refuses generation 1."""
    alice, bob = roost(b"alice"), CoreCryptoPeer(b"bob")
    gid = new_group_id("cc-ooo")
    alice.create_group(gid)
    bob.join(alice.add_members(gid, [key_package(bob)]).welcome)
    msgs = [alice.encrypt(gid, b"message %d" % i) for i in range(4)]
    assert bob.process(msgs[3]).data == b"message 3"
    with pytest.raises(PeerError, match="DuplicateMessage"):
        bob.process(msgs[1])
    assert bob.process(msgs[2]).data == b"message 2"


def test_roost_rejects_tampered_corecrypto_messages() -> None:
    """One flipped bit in a core-crypto commit (signature, membership tag, content) or
    application message: the Roost member and the observer reject it and stay unchanged."""
    from roost.mls import MLSError

    alice, bob = roost(b"alice"), CoreCryptoPeer(b"bob")
    gid = new_group_id("cc-tamper")
    tap = ObserverTap(alice.create_group(gid))
    add = alice.add_members(gid, [key_package(bob)])
    tap.apply(add.commit, add)
    bob.join(add.welcome)
    before = alice.state(gid)
    upd = bob.self_update(gid)
    # From the end: membership_tag<V> (33), confirmation_tag<V> (33), signature<V> (65).
    bad_signature = _flip(upd.commit, len(upd.commit) - 33 - 33 - 10)
    bad_membership_tag = _flip(upd.commit, len(upd.commit) - 5)
    bad_content = _flip(upd.commit, len(upd.commit) // 2)  # inside the UpdatePath
    for bad in (bad_signature, bad_membership_tag, bad_content):
        with pytest.raises(MLSError):
            alice.process(bad)
    for bad in (bad_signature, bad_content):  # the observer has no membership key
        with pytest.raises(MLSError):
            tap.observer.apply(bad)
    assert alice.state(gid) == before
    deliver_commit(upd, bob, [alice], tap.apply)
    assert agree(gid, [alice, bob], tap) == 2
    msg = bob.encrypt(gid, b"genuine")
    for i in (len(msg) - 1, len(msg) - 20, 30):
        with pytest.raises(MLSError):
            alice.process(_flip(msg, i))
    assert alice.process(msg).data == b"genuine"


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def test_corecrypto_refuses_non_wire_identities() -> None:
    """A Roost member with a plain identity (b"alice") can be in a core-crypto group at the
    MLS level, but core-crypto's member listing rejects it: Roost clients that share groups
    with core-crypto must use Wire client ids."""
    alice, bob = RoostPeer(b"alice", ratchet_tree_extension=True), CoreCryptoPeer(b"bob")
    gid = new_group_id("cc-id")
    alice.create_group(gid)
    assert bob.join(alice.add_members(gid, [key_package(bob)]).welcome) == gid
    with pytest.raises(PeerError, match="not of the format"):
        bob.state(gid)


def test_corecrypto_needs_the_tree_in_the_welcome() -> None:
    """Without the ratchet_tree extension core-crypto cannot join (it takes no tree aside)."""
    alice, bob = RoostPeer(wire_client_id(b"alice")), CoreCryptoPeer(b"bob")
    gid = new_group_id("cc-notree")
    alice.create_group(gid)
    add = alice.add_members(gid, [key_package(bob)])
    with pytest.raises(PeerUnsupported):
        bob.join(add.welcome, add.ratchet_tree)
    with pytest.raises(PeerError):
        bob.join(add.welcome)


_UNSUPPORTED = {
    "proposals-by-reference": "core-crypto's API creates no stand-alone Add/Remove/Update "
    "proposals; it only commits (its pending proposals come from external senders)",
    "psk-commits": "core-crypto's API has no way to register or commit a PreSharedKey",
    "out-of-band-ratchet-tree": "core-crypto joins only from a Welcome or GroupInfo that "
    "carries the ratchet_tree extension",
    "group-info-export": "core-crypto hands out a GroupInfo only inside a commit bundle",
    "x509-credentials": "core-crypto makes x509 credentials only through its ACME/E2EI "
    "enrolment (X509CredentialAcquisition); Credential has no constructor from a "
    "certificate chain, so a Roost AS-issued chain cannot be used",
}


@pytest.mark.parametrize("scenario", _UNSUPPORTED.keys())
def test_not_expressible_with_corecrypto(scenario: str) -> None:
    pytest.skip(_UNSUPPORTED[scenario])
