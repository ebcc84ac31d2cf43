"""Roost against another implementation: the scenarios shared by test_roost_tsmls.py and
test_roost_mlsrs.py. A roost ``GroupObserver`` (the DS's view) follows every group, fed each
PublicMessage proposal and commit, and must match the members after every commit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from .peer import MlsPeer, PublicGroupState
from .roost_peer import Homeserver, ObserverTap, RoostPeer
from .scenario import assert_agree, check_bundle, deliver_commit, key_package, send_application
from .wire import WIRE_PUBLIC_MESSAGE, wire_format

Factory = Callable[..., MlsPeer]
_ids = itertools.count()


def new_group_id(tag: str) -> bytes:
    return f"roost-{tag}-{next(_ids)}".encode()


def start_observer(created: PublicGroupState) -> ObserverTap | None:
    """From the creator's epoch-0 GroupInfo; an mls-rs creator has none (docs/interop.md),
    then the caller starts the observer later from a roost member's GroupInfo."""
    return None if created.group_info is None else ObserverTap(created)


def roost_observer(created: PublicGroupState) -> ObserverTap:
    tap = start_observer(created)
    assert tap is not None, "roost always hands out a GroupInfo"
    return tap


def observe(tap: ObserverTap | None, members: list[MlsPeer], group_id: bytes) -> int:
    epoch = assert_agree(group_id, members)
    if tap is not None:
        for m in members:
            tap.assert_tracks(m.state(group_id))
    return epoch


def lifecycle_roost_creates(other: Factory, third_impl: Factory) -> None:
    """Roost creates and adds the other implementation, which later adds a third member."""
    alice = RoostPeer(b"alice")
    bob = other(b"bob")
    carol = third_impl(b"carol")
    gid = new_group_id("rc")

    tap = roost_observer(alice.create_group(gid))
    add = alice.add_members(gid, [key_package(bob)])
    check_bundle(add, adds=True)
    tap.apply(add.commit, add)
    assert bob.join(add.welcome, add.ratchet_tree) == gid
    assert observe(tap, [alice, bob], gid) == 1

    send_application(alice, gid, [bob], b"hello from roost")
    send_application(bob, gid, [alice], b"hello from " + bob.name.encode())

    for committer, receiver in ((bob, alice), (alice, bob)):
        upd = committer.self_update(gid)
        check_bundle(upd, adds=False)
        deliver_commit(upd, committer, [receiver], tap.apply)
    assert observe(tap, [alice, bob], gid) == 3

    add3 = bob.add_members(gid, [key_package(carol)])
    check_bundle(add3, adds=True)
    deliver_commit(add3, bob, [alice], tap.apply)
    assert carol.join(add3.welcome, add3.ratchet_tree) == gid
    everyone = [alice, bob, carol]
    assert observe(tap, everyone, gid) == 4
    for sender in everyone:
        send_application(sender, gid, everyone, b"three members, from " + sender.name.encode())
    upd = carol.self_update(gid)
    deliver_commit(upd, carol, everyone, tap.apply)
    assert observe(tap, everyone, gid) == 5

    # Roost removes the other implementation's member.
    rm = alice.remove(gid, bob.state(gid).leaf_index)
    check_bundle(rm, adds=False)
    assert bob.process(rm.commit).removed
    deliver_commit(rm, alice, [carol], tap.apply)
    assert observe(tap, [alice, carol], gid) == 6
    send_application(carol, gid, [alice], b"after the removal")
    assert tap.commits == 6


def lifecycle_other_creates(other: Factory, third_impl: Factory) -> None:
    """The other implementation creates and adds roost, then adds a third member."""
    alice = other(b"alice")
    bob = RoostPeer(b"bob")
    carol = third_impl(b"carol")
    gid = new_group_id("oc")

    tap = start_observer(alice.create_group(gid))
    add = alice.add_members(gid, [key_package(bob)])
    check_bundle(add, adds=True)
    if tap is not None:
        tap.apply(add.commit, add)
    assert bob.join(add.welcome, add.ratchet_tree) == gid
    if tap is None:
        # No GroupInfo from the creator: the DS starts from the roost member's one.
        tap = ObserverTap(bob.export_group_info(gid))
    assert observe(tap, [alice, bob], gid) == 1

    send_application(bob, gid, [alice], b"hello from roost")
    send_application(alice, gid, [bob], b"hello from " + alice.name.encode())

    for committer, receiver in ((bob, alice), (alice, bob)):
        upd = committer.self_update(gid)
        check_bundle(upd, adds=False)
        deliver_commit(upd, committer, [receiver], tap.apply)
    assert observe(tap, [alice, bob], gid) == 3

    add3 = alice.add_members(gid, [key_package(carol)])
    deliver_commit(add3, alice, [bob], tap.apply)
    assert carol.join(add3.welcome, add3.ratchet_tree) == gid
    everyone = [alice, bob, carol]
    assert observe(tap, everyone, gid) == 4
    for sender in everyone:
        send_application(sender, gid, everyone, b"three members, from " + sender.name.encode())

    # The other implementation removes the roost member (roost committed, so mls-rs knows it).
    rm = alice.remove(gid, bob.state(gid).leaf_index)
    got = bob.process(rm.commit)
    assert got.kind == "commit" and got.removed
    deliver_commit(rm, alice, [carol], tap.apply)
    assert observe(tap, [alice, carol], gid) == 5
    send_application(carol, gid, [alice], b"after the removal")


def proposals_by_reference(other: Factory) -> None:
    """Proposals from one side committed by reference by the other; the observer caches them."""
    alice = RoostPeer(b"alice")
    bob = other(b"bob")
    carol = other(b"carol")
    dave = RoostPeer(b"dave")
    gid = new_group_id("pr")
    tap = roost_observer(alice.create_group(gid))
    add = alice.add_members(gid, [key_package(bob), key_package(carol)])
    tap.apply(add.commit, add)
    bob.join(add.welcome, add.ratchet_tree)
    carol.join(add.welcome, add.ratchet_tree)
    members = [alice, bob, carol]
    # carol commits once so that an mls-rs peer can name her in a proposal.
    upd = carol.self_update(gid)
    deliver_commit(upd, carol, members, tap.apply)

    # Roost proposes adding dave; the other side commits it.
    prop = alice.propose_add(gid, key_package(dave))
    assert wire_format(prop) == WIRE_PUBLIC_MESSAGE
    tap.apply_proposal(prop)
    for peer in (bob, carol):
        assert peer.process(prop).kind == "proposal"
    bundle = bob.commit_pending(gid)
    check_bundle(bundle, adds=True)
    deliver_commit(bundle, bob, [alice, carol], tap.apply)
    assert dave.join(bundle.welcome, bundle.ratchet_tree) == gid
    members = [alice, bob, carol, dave]
    assert observe(tap, members, gid) == 3

    # The other side proposes removing carol; roost commits it.
    prop = bob.propose_remove(gid, carol.state(gid).leaf_index)
    tap.apply_proposal(prop)
    for peer in (alice, carol, dave):
        assert peer.process(prop).kind == "proposal"
    bundle = alice.commit_pending(gid)
    check_bundle(bundle, adds=False)
    assert carol.process(bundle.commit).removed
    deliver_commit(bundle, alice, [bob, dave], tap.apply)
    members = [alice, bob, dave]
    assert observe(tap, members, gid) == 4

    # Roost proposes an Update of its own leaf; the other side commits it.
    prop = alice.propose_update(gid)
    tap.apply_proposal(prop)
    for peer in (bob, dave):
        assert peer.process(prop).kind == "proposal"
    bundle = bob.commit_pending(gid)
    deliver_commit(bundle, bob, [alice, dave], tap.apply)
    assert observe(tap, members, gid) == 5
    send_application(dave, gid, members, b"after proposals by reference")
    send_application(alice, gid, members, b"alice with her updated leaf")


def join_with_tree_extension(other: Factory, roost_creates: bool) -> None:
    """Welcome carries the ratchet tree in the GroupInfo; no out-of-band tree."""
    if roost_creates:
        creator, joiner = RoostPeer(b"alice", ratchet_tree_extension=True), other(b"bob")
    else:
        creator, joiner = other(b"alice", ratchet_tree_extension=True), RoostPeer(b"bob")
    gid = new_group_id("rt")
    creator.create_group(gid)
    add = creator.add_members(gid, [key_package(joiner)])
    assert joiner.join(add.welcome) == gid
    assert assert_agree(gid, [creator, joiner]) == 1
    send_application(joiner, gid, [creator], b"joined without an out-of-band tree")
    send_application(creator, gid, [joiner], b"welcome")


def add_many(other: Factory, roost_creates: bool, n: int = 10) -> None:
    """One commit adds ``n`` members of the other implementation (or roost members)."""
    creator: MlsPeer = RoostPeer(b"alice") if roost_creates else other(b"alice")
    joiner_impl = other if roost_creates else RoostPeer
    joiners = [joiner_impl(b"member-%d" % i) for i in range(n)]
    gid = new_group_id("many")
    created = creator.create_group(gid)
    add = creator.add_members(gid, [key_package(j) for j in joiners])
    for j in joiners:
        assert j.join(add.welcome, add.ratchet_tree) == gid
    everyone = [creator, *joiners]
    tap = start_observer(created)
    if tap is not None:
        tap.apply(add.commit, add)
    assert observe(tap, everyone, gid) == 1
    upd = joiners[n // 2].self_update(gid)
    deliver_commit(upd, joiners[n // 2], everyone, tap.apply if tap else None)
    assert observe(tap, everyone, gid) == 2
    send_application(joiners[-1], gid, everyone, b"many members")


def external_join(other: Factory, roost_hosts: bool) -> None:
    """A newcomer joins by external commit from the GroupInfo the DS serves; members and the
    observer accept it. ``roost_hosts``: roost made the group and roost joins externally."""
    host = RoostPeer(b"alice") if roost_hosts else other(b"alice")
    member = other(b"bob") if roost_hosts else RoostPeer(b"bob")
    newcomer = other(b"erin") if roost_hosts else RoostPeer(b"erin")
    gid = new_group_id("ext")
    host.create_group(gid)
    add = host.add_members(gid, [key_package(member)])
    member.join(add.welcome, add.ratchet_tree)
    members = [host, member]
    served = host.export_group_info(gid, external_pub=True)
    tap = ObserverTap(served)

    joined, bundle = newcomer.join_external(served.group_info, served.ratchet_tree)
    assert joined == gid
    check_bundle(bundle, adds=False)
    deliver_commit(bundle, newcomer, members, tap.apply)
    everyone = [*members, newcomer]
    assert observe(tap, everyone, gid) == 2
    for sender in everyone:
        send_application(sender, gid, everyone, b"after the external join")
    upd = host.self_update(gid)
    deliver_commit(upd, host, everyone, tap.apply)
    assert observe(tap, everyone, gid) == 3


def homeserver_removes() -> None:
    """The homeserver (external sender) proposes a Remove; a member commits it by reference,
    the observer follows. This is how Roost removes a deleted account's clients. Roost-only:
    neither ts-mls 1.6.4 nor the mls-rs wheel can process external proposals (pinned tests)."""
    server = Homeserver()
    alice, bob, carol = RoostPeer(b"alice"), RoostPeer(b"bob"), RoostPeer(b"carol")
    gid = new_group_id("hs")
    tap = roost_observer(alice.create_group(gid, [server.extension]))
    add = alice.add_members(gid, [key_package(bob), key_package(carol)])
    tap.apply(add.commit, add)
    for p in (bob, carol):
        assert p.join(add.welcome, add.ratchet_tree) == gid
    members = [alice, bob, carol]
    proposal = server.remove(tap, carol.state(gid).leaf_index)
    assert wire_format(proposal) == WIRE_PUBLIC_MESSAGE
    tap.apply_proposal(proposal)
    for p in members:
        assert p.process(proposal).kind == "proposal", p.name
    bundle = bob.commit_pending(gid)
    assert carol.process(bundle.commit).removed
    deliver_commit(bundle, bob, [alice], tap.apply)
    assert observe(tap, [alice, bob], gid) == 2


def homeserver_group_with(other: Factory) -> tuple[Homeserver, ObserverTap, MlsPeer, bytes]:
    """A roost group with the homeserver as external sender and an ``other`` member; returns
    (server, observer, the other member, group id) with a Remove proposal not yet sent."""
    server = Homeserver()
    alice, bob = RoostPeer(b"alice"), other(b"bob")
    gid = new_group_id("hs")
    tap = roost_observer(alice.create_group(gid, [server.extension]))
    add = alice.add_members(gid, [key_package(bob)])
    tap.apply(add.commit, add)
    assert bob.join(add.welcome, add.ratchet_tree) == gid
    assert observe(tap, [alice, bob], gid) == 1
    return server, tap, bob, gid


def _two_member_group(other: Factory, roost_creates: bool):
    roost, peer = RoostPeer(b"roost"), other(b"peer")
    creator, joiner = (roost, peer) if roost_creates else (peer, roost)
    gid = new_group_id("msg")
    created = creator.create_group(gid)
    add = creator.add_members(gid, [key_package(joiner)])
    assert joiner.join(add.welcome, add.ratchet_tree) == gid
    return gid, roost, peer, created, add


def application_edge_cases(other: Factory) -> None:
    """Out-of-order delivery within an epoch, empty and large payloads, padding, and a roost
    restart (state persisted and restored) between messages."""
    gid, roost, peer, _created, _add = _two_member_group(other, roost_creates=True)
    for sender, receiver in ((peer, roost), (roost, peer)):
        msgs = [sender.encrypt(gid, b"message %d" % i) for i in range(5)]
        for i in (3, 0, 4, 2, 1):  # later generations first: the receiver ratchets ahead
            got = receiver.process(msgs[i])
            assert got.data == b"message %d" % i
        for payload in (b"", bytes(range(256)) * 400):  # empty and 100 KiB
            got = receiver.process(sender.encrypt(gid, payload))
            assert got.data == payload
    padded = roost.encrypt(gid, b"padded", padding=256)
    assert peer.process(padded).data == b"padded"
    roost.reload(gid)
    send_application(peer, gid, [roost], b"after the restart")
    upd = peer.self_update(gid)
    deliver_commit(upd, peer, [roost])
    roost.reload(gid)
    send_application(roost, gid, [peer], b"restored state, new epoch")
    assert_agree(gid, [roost, peer])


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def tampered_messages_rejected(other: Factory) -> None:
    """Commits and application messages from the other implementation with one flipped bit
    are rejected by roost members and the observer, which stay unchanged and then accept
    the genuine message."""
    from roost.mls import MLSError

    gid, roost, peer, created, add = _two_member_group(other, roost_creates=True)
    tap = roost_observer(created)
    tap.apply(add.commit, add)
    before = roost.state(gid)

    upd = peer.self_update(gid)
    # From the end: membership_tag<V> (33), confirmation_tag<V> (33), signature<V> (65).
    bad_signature = _flip(upd.commit, len(upd.commit) - 33 - 33 - 10)
    bad_membership_tag = _flip(upd.commit, len(upd.commit) - 5)
    bad_content = _flip(upd.commit, 20)
    for bad in (bad_signature, bad_membership_tag, bad_content):
        try:
            roost.process(bad)
        except MLSError:
            pass
        else:
            raise AssertionError("roost accepted a tampered commit")
    for bad in (bad_signature, bad_content):  # the observer has no membership key
        try:
            tap.observer.apply(bad)
        except MLSError:
            pass
        else:
            raise AssertionError("the observer accepted a tampered commit")
    assert roost.state(gid) == before
    deliver_commit(upd, peer, [roost], tap.apply)
    assert observe(tap, [roost, peer], gid) == 2

    msg = peer.encrypt(gid, b"genuine")
    for i in (len(msg) - 1, len(msg) - 20, 30):
        try:
            roost.process(_flip(msg, i))
        except MLSError:
            pass
        else:
            raise AssertionError(f"roost accepted an application message tampered at {i}")
    assert roost.process(msg).data == b"genuine"


def psk_commits(other: Factory, roost_creates: bool) -> None:
    """External and resumption PSKs injected by commits from either side (key schedule with a
    non-zero psk_secret); the observer follows (it needs no PSK)."""
    gid, roost, peer, created, add = _two_member_group(other, roost_creates)
    tap = start_observer(created) or ObserverTap(roost.export_group_info(gid))
    if created.group_info is not None:
        tap.apply(add.commit, add)
    for p in (roost, peer):
        p.add_external_psk(b"shared psk", b"\x42" * 32)
    epoch = 1
    for committer, receiver in ((roost, peer), (peer, roost)):
        for kwargs in ({"psk_id": b"shared psk"}, {"resumption_epoch": epoch}):
            bundle = committer.commit_psk(gid, **kwargs)
            deliver_commit(bundle, committer, [receiver], tap.apply)
            epoch += 1
            assert observe(tap, [roost, peer], gid) == epoch
    send_application(peer, gid, [roost], b"after four PSK commits")
