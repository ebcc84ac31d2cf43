"""The harness proves itself: ts-mls and mls-rs talk to each other, both directions.

No roost code runs here (beyond the byte Reader the harness uses), so a failure means the
harness or one of the two reference implementations is wrong, not roost.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from .mlsrs_peer import MlsRsPeer
from .peer import MlsPeer, PeerError, PeerUnsupported
from .scenario import (
    assert_agree,
    check_bundle,
    deliver_commit,
    key_package,
    send_application,
)
from .tsmls_peer import TsMlsPeer
from .wire import WIRE_PUBLIC_MESSAGE, tree_members, wire_format

Factory = Callable[..., MlsPeer]
IMPLS: dict[str, Factory] = {"ts-mls": TsMlsPeer, "mls-rs": MlsRsPeer}
PAIRS = [("ts-mls", "mls-rs"), ("mls-rs", "ts-mls")]
_group_ids = itertools.count()


def new_group_id() -> bytes:
    return b"harness-%d" % next(_group_ids)


@pytest.mark.parametrize(
    ("creator_impl", "joiner_impl"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS]
)
def test_full_lifecycle(creator_impl: str, joiner_impl: str) -> None:
    creator = IMPLS[creator_impl](b"alice")
    joiner = IMPLS[joiner_impl](b"bob")
    third = IMPLS[creator_impl](b"carol")
    gid = new_group_id()

    # Creator makes the group and adds the other implementation from its KeyPackage.
    created = creator.create_group(gid)
    assert [m.identity for m in tree_members(created.ratchet_tree)] == [b"alice"]
    add = creator.add_members(gid, [key_package(joiner)])
    check_bundle(add, adds=True)
    assert add.epoch == 1
    assert joiner.join(add.welcome, add.ratchet_tree) == gid
    assert assert_agree(gid, [creator, joiner]) == 1

    # Application messages both ways.
    send_application(creator, gid, [joiner], b"hello from " + creator_impl.encode())
    send_application(joiner, gid, [creator], b"hello from " + joiner_impl.encode())

    # Self-update path commits both ways.
    upd = joiner.self_update(gid)
    check_bundle(upd, adds=False)
    deliver_commit(upd, joiner, [creator])
    assert assert_agree(gid, [creator, joiner]) == 2
    upd = creator.self_update(gid)
    deliver_commit(upd, creator, [joiner])
    assert assert_agree(gid, [creator, joiner]) == 3

    # The joiner (other implementation) adds a third member.
    add3 = joiner.add_members(gid, [key_package(third)])
    check_bundle(add3, adds=True)
    deliver_commit(add3, joiner, [creator])
    assert third.join(add3.welcome, add3.ratchet_tree) == gid
    members = [creator, joiner, third]
    assert assert_agree(gid, members) == 4
    assert creator.state(gid).identities() == {b"alice", b"bob", b"carol"}
    for sender in members:
        send_application(sender, gid, members, b"all three, from " + sender.name.encode())

    # Creator removes the joiner; the joiner learns it was removed.
    bob_leaf = joiner.state(gid).leaf_index
    rm = creator.remove(gid, bob_leaf)
    check_bundle(rm, adds=False)
    got = joiner.process(rm.commit)
    assert got.kind == "commit" and got.removed
    deliver_commit(rm, creator, [third])
    assert assert_agree(gid, [creator, third]) == 5
    assert creator.state(gid).identities() == {b"alice", b"carol"}
    send_application(third, gid, [creator], b"after the removal")


@pytest.mark.parametrize(
    ("creator_impl", "joiner_impl"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS]
)
def test_joiner_removes_creator(creator_impl: str, joiner_impl: str) -> None:
    creator = IMPLS[creator_impl](b"alice")
    joiner = IMPLS[joiner_impl](b"bob")
    third = IMPLS[joiner_impl](b"carol")
    gid = new_group_id()
    creator.create_group(gid)
    add = creator.add_members(gid, [key_package(joiner), key_package(third)])
    joiner.join(add.welcome, add.ratchet_tree)
    third.join(add.welcome, add.ratchet_tree)
    assert assert_agree(gid, [creator, joiner, third]) == 1
    # An mls-rs joiner can only remove a member it has seen commit (docs/interop.md).
    upd = creator.self_update(gid)
    deliver_commit(upd, creator, [joiner, third])

    rm = joiner.remove(gid, creator.state(gid).leaf_index)
    assert creator.process(rm.commit).removed
    deliver_commit(rm, joiner, [third])
    assert assert_agree(gid, [joiner, third]) == 3
    send_application(third, gid, [joiner], b"creator is gone")


@pytest.mark.parametrize(
    ("creator_impl", "joiner_impl"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS]
)
def test_join_with_ratchet_tree_extension(creator_impl: str, joiner_impl: str) -> None:
    """Welcome carries the tree in the GroupInfo ratchet_tree extension (no out-of-band tree)."""
    creator = IMPLS[creator_impl](b"alice", ratchet_tree_extension=True)
    joiner = IMPLS[joiner_impl](b"bob")
    gid = new_group_id()
    creator.create_group(gid)
    add = creator.add_members(gid, [key_package(joiner)])
    assert joiner.join(add.welcome) == gid
    assert assert_agree(gid, [creator, joiner]) == 1
    send_application(joiner, gid, [creator], b"joined without an out-of-band tree")


@pytest.mark.parametrize(
    ("creator_impl", "joiner_impl"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS]
)
def test_add_many_in_one_commit(creator_impl: str, joiner_impl: str) -> None:
    creator = IMPLS[creator_impl](b"alice")
    joiners = [IMPLS[joiner_impl](b"member-%d" % i) for i in range(7)]
    gid = new_group_id()
    creator.create_group(gid)
    add = creator.add_members(gid, [key_package(j) for j in joiners])
    for j in joiners:
        assert j.join(add.welcome, add.ratchet_tree) == gid
    everyone = [creator, *joiners]
    assert assert_agree(gid, everyone) == 1
    upd = joiners[3].self_update(gid)
    deliver_commit(upd, joiners[3], everyone)
    assert assert_agree(gid, everyone) == 2
    send_application(joiners[6], gid, everyone, b"eight members")


def test_tsmls_group_info_is_exported() -> None:
    """ts-mls hands out a signed GroupInfo with every commit (what the Roost DS needs)."""
    alice = TsMlsPeer(b"alice")
    gid = new_group_id()
    assert alice.create_group(gid).group_info is not None
    add = alice.add_members(gid, [key_package(MlsRsPeer(b"bob"))])
    assert add.group_info is not None and add.ratchet_tree is not None


def test_mlsrs_limits_are_reported() -> None:
    """The wheel gives no GroupInfo and cannot remove a member it never saw commit."""
    alice = MlsRsPeer(b"alice")
    bob = TsMlsPeer(b"bob")
    gid = new_group_id()
    assert alice.create_group(gid).group_info is None
    add = alice.add_members(gid, [key_package(bob)])
    assert add.group_info is None
    bob.join(add.welcome, add.ratchet_tree)
    with pytest.raises(PeerUnsupported):
        alice.remove(gid, bob.state(gid).leaf_index)


@pytest.mark.parametrize(
    ("creator_impl", "joiner_impl"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS]
)
def test_proposals_committed_by_reference(creator_impl: str, joiner_impl: str) -> None:
    """One implementation proposes (PublicMessage), the other commits the proposal by ref."""
    creator = IMPLS[creator_impl](b"alice")
    joiner = IMPLS[joiner_impl](b"bob")
    carol = IMPLS[creator_impl](b"carol")
    dave = IMPLS[joiner_impl](b"dave")
    gid = new_group_id()
    creator.create_group(gid)
    add = creator.add_members(gid, [key_package(joiner), key_package(carol)])
    joiner.join(add.welcome, add.ratchet_tree)
    carol.join(add.welcome, add.ratchet_tree)
    members = [creator, joiner, carol]

    # Creator proposes removing carol and adding dave; the joiner commits both.
    proposals = [
        creator.propose_remove(gid, carol.state(gid).leaf_index),
        creator.propose_add(gid, key_package(dave)),
    ]
    for p in proposals:
        assert wire_format(p) == WIRE_PUBLIC_MESSAGE
        for peer in (joiner, carol):
            assert peer.process(p).kind == "proposal"
    bundle = joiner.commit_pending(gid)
    check_bundle(bundle, adds=True)
    # dave takes carol's freed leaf. ts-mls 1.6.4 cannot process a commit that removes it
    # while reusing its leaf (test_tsmls_removed_member_with_reused_leaf); mls-rs can.
    if isinstance(carol, MlsRsPeer):
        assert carol.process(bundle.commit).removed
    deliver_commit(bundle, joiner, [creator])
    assert dave.join(bundle.welcome, bundle.ratchet_tree) == gid
    members = [creator, joiner, dave]
    assert assert_agree(gid, members) == 2
    assert creator.state(gid).identities() == {b"alice", b"bob", b"dave"}
    send_application(dave, gid, members, b"joined through a proposal")


def test_tsmls_removed_member_with_reused_leaf() -> None:
    """Known ts-mls 1.6.4 bug (docs/interop.md): a member removed by a commit that also adds
    a member into its freed leaf fails with an InternalError instead of noticing the removal.
    mls-rs handles the same commit. If this test fails, ts-mls fixed it: update the docs."""
    alice, carol, dave = TsMlsPeer(b"alice"), TsMlsPeer(b"carol"), MlsRsPeer(b"dave")
    bob = MlsRsPeer(b"bob")
    gid = new_group_id()
    alice.create_group(gid)
    add = alice.add_members(gid, [key_package(bob), key_package(carol)])
    bob.join(add.welcome, add.ratchet_tree)
    carol.join(add.welcome, add.ratchet_tree)
    for p in (alice.propose_remove(gid, 2), alice.propose_add(gid, key_package(dave))):
        bob.process(p)
        carol.process(p)
    bundle = bob.commit_pending(gid)
    with pytest.raises(PeerError, match="No overlap between provided private keys"):
        carol.process(bundle.commit)
    deliver_commit(bundle, bob, [alice])
    dave.join(bundle.welcome, bundle.ratchet_tree)
    assert dave.state(gid).leaf_index == 2
    assert assert_agree(gid, [alice, bob, dave]) == 2
