"""roost, ts-mls, mls-rs and Wire's core-crypto in one group, each committing in turn.

Every member is named by a Wire client id (core-crypto rejects other identities) and every
inviter puts the ratchet tree into its Welcomes (core-crypto takes no tree aside).
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "roost.mls.group", reason="roost.mls.group (member Group, GroupObserver) not present"
)

from .corecrypto_peer import CoreCryptoPeer, wire_client_id  # noqa: E402
from .corecrypto_scenario import agree, leaf_of  # noqa: E402
from .mlsrs_peer import MlsRsPeer  # noqa: E402
from .roost_lifecycle import new_group_id  # noqa: E402
from .roost_peer import ObserverTap, RoostPeer  # noqa: E402
from .scenario import deliver_commit, key_package, send_application  # noqa: E402
from .tsmls_peer import TsMlsPeer  # noqa: E402

IMPLS = ("roost", "ts-mls", "mls-rs", "core-crypto")


def make(impl: str, name: str, device: int):
    if impl == "core-crypto":
        return CoreCryptoPeer(name.encode())
    identity = wire_client_id(name.encode(), device)
    cls = {"roost": RoostPeer, "ts-mls": TsMlsPeer, "mls-rs": MlsRsPeer}[impl]
    return cls(identity, ratchet_tree_extension=True)


# Not core-crypto: its groups cannot take the mls-rs member (pinned below).
@pytest.mark.parametrize("creator_impl", ["roost", "ts-mls", "mls-rs"])
def test_four_stacks_in_one_group(creator_impl: str) -> None:
    creator = make(creator_impl, "creator", 1)
    others = [make(impl, impl, 2) for impl in IMPLS if impl != creator_impl]
    gid = new_group_id("four")
    creator.create_group(gid)
    add = creator.add_members(gid, [key_package(p) for p in others])
    for p in others:
        assert p.join(add.welcome) == gid  # the tree comes inside the Welcome
    members = [creator, *others]
    roost_member = next(p for p in members if isinstance(p, RoostPeer))
    tap = ObserverTap(roost_member.export_group_info(gid))
    start = agree(gid, members, tap)
    assert start == 1

    for epoch, committer in enumerate(members, start=start + 1):
        upd = committer.self_update(gid)
        deliver_commit(upd, committer, members, tap.apply)
        assert agree(gid, members, tap) == epoch
    for sender in members:
        send_application(sender, gid, members, b"from " + sender.name.encode())

    # Each implementation adds one newcomer of the next implementation.
    for i, committer in enumerate(list(members)):
        nxt = IMPLS[(IMPLS.index(committer.implementation) + 1) % len(IMPLS)]
        newcomer = make(nxt, f"new-{i}", 3)
        add = committer.add_members(gid, [key_package(newcomer)])
        deliver_commit(add, committer, members, tap.apply)
        # ts-mls members that joined put no tree into their Welcomes: hand it over aside,
        # except to core-crypto (mls-rs invites it, with the tree in the Welcome).
        tree = None if isinstance(newcomer, CoreCryptoPeer) else add.ratchet_tree
        assert newcomer.join(add.welcome, tree) == gid
        members.append(newcomer)
    epoch = agree(gid, members, tap)
    assert len(members) == 8

    # core-crypto removes the first ts-mls member; roost removes the first core-crypto one.
    first = {p.implementation: p for p in reversed(members[:4])}
    cc, rp = first["core-crypto"], first["roost"]
    for remover, removed in ((cc, first["ts-mls"]), (rp, cc)):
        if isinstance(remover, CoreCryptoPeer):
            rm = remover.remove_identity(gid, removed.identity)
        else:
            rm = remover.remove(gid, leaf_of(gid, rp, removed))
        assert removed.process(rm.commit).removed
        members.remove(removed)
        deliver_commit(rm, remover, members, tap.apply)
        epoch += 1
        assert agree(gid, members, tap) == epoch
    for sender in members:
        send_application(sender, gid, members, b"still here: " + sender.name.encode())


def test_corecrypto_rejects_mlsrs_key_packages() -> None:
    """Pinned: core-crypto 10.3.0 refuses the mls-rs wheel's KeyPackages ("Lifetime is not
    acceptable"; their lifetime is one year from now and the wheel cannot change it), while
    it accepts ts-mls's and roost's. If this fails, update docs/interop.md."""
    from .peer import PeerError

    alice = CoreCryptoPeer(b"alice")
    gid = new_group_id("lifetime")
    alice.create_group(gid)
    with pytest.raises(PeerError, match="Lifetime is not acceptable"):
        alice.add_members(gid, [key_package(make("mls-rs", "bob", 2))])
    alice.add_members(gid, [key_package(make("ts-mls", "carol", 2))])
    dave = make("roost", "dave", 2)
    add = alice.add_members(gid, [key_package(dave)])
    assert dave.join(add.welcome) == gid


def test_corecrypto_groups_require_x509_capability() -> None:
    """Pinned: core-crypto 10.3.0 creates groups whose required_capabilities list credential
    types basic and x509; the mls-rs wheel's leaves offer only basic, so no member can add an
    mls-rs client to a group core-crypto created (roost refuses such a commit)."""
    from roost.mls import MLSMessage, ValidationError

    alice, bob = CoreCryptoPeer(b"alice"), make("roost", "bob", 2)
    gid = new_group_id("caps")
    alice.create_group(gid)
    add = alice.add_members(gid, [key_package(bob)])
    assert bob.join(add.welcome) == gid
    assert add.group_info is not None
    (required,) = MLSMessage.decode(add.group_info).body.group_context.extensions
    assert required.extension_type == 3  # required_capabilities
    assert required.extension_data == bytes.fromhex("00000400010002")  # credentials [1, 2]
    with pytest.raises(ValidationError, match="required credential type 2"):
        bob.add_members(gid, [key_package(make("mls-rs", "carol", 2))])
