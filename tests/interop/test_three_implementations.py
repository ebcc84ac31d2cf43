"""roost, ts-mls and mls-rs in one group, each committing in turn, with the roost observer."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "roost.mls.group", reason="roost.mls.group (member Group, GroupObserver) not present"
)

from .mlsrs_peer import MlsRsPeer  # noqa: E402
from .roost_lifecycle import new_group_id, observe, roost_observer, start_observer  # noqa: E402
from .roost_peer import ObserverTap, RoostPeer  # noqa: E402
from .scenario import deliver_commit, key_package, send_application  # noqa: E402
from .tsmls_peer import TsMlsPeer  # noqa: E402

IMPLS = {"roost": RoostPeer, "ts-mls": TsMlsPeer, "mls-rs": MlsRsPeer}


@pytest.mark.parametrize("creator_impl", IMPLS.keys())
def test_mixed_group(creator_impl: str) -> None:
    creator = IMPLS[creator_impl](b"creator")
    others = [cls(name.encode()) for name, cls in IMPLS.items() if name != creator_impl]
    gid = new_group_id("mixed")
    created = creator.create_group(gid)
    add = creator.add_members(gid, [key_package(p) for p in others])
    for p in others:
        assert p.join(add.welcome, add.ratchet_tree) == gid
    members = [creator, *others]
    tap = start_observer(created)
    if tap is None:  # mls-rs made the group: start from the roost member's GroupInfo
        roost_member = next(p for p in members if isinstance(p, RoostPeer))
        tap = ObserverTap(roost_member.export_group_info(gid))
    else:
        tap.apply(add.commit, add)
    assert observe(tap, members, gid) == 1

    # Every implementation commits a self-update in turn; everyone follows.
    for epoch, committer in enumerate(members, start=2):
        upd = committer.self_update(gid)
        deliver_commit(upd, committer, members, tap.apply)
        assert observe(tap, members, gid) == epoch
    for sender in members:
        send_application(sender, gid, members, b"from " + sender.name.encode())

    # Each implementation adds one newcomer of the next implementation.
    names = list(IMPLS)
    for i, committer in enumerate(list(members)):
        newcomer_cls = IMPLS[names[(names.index(committer.implementation) + 1) % 3]]
        newcomer = newcomer_cls(b"new-%d" % i)
        add = committer.add_members(gid, [key_package(newcomer)])
        deliver_commit(add, committer, members, tap.apply)
        assert newcomer.join(add.welcome, add.ratchet_tree) == gid
        members.append(newcomer)
    epoch = observe(tap, members, gid)
    assert len(members) == 6

    # The mls-rs member removes the ts-mls member (it saw it commit), roost removes mls-rs.
    ts = next(p for p in members[:3] if p.implementation == "ts-mls")
    rs = next(p for p in members[:3] if p.implementation == "mls-rs")
    rp = next(p for p in members[:3] if p.implementation == "roost")
    for remover, removed in ((rs, ts), (rp, rs)):
        rm = remover.remove(gid, removed.state(gid).leaf_index)
        assert removed.process(rm.commit).removed
        members.remove(removed)
        deliver_commit(rm, remover, members, tap.apply)
        epoch += 1
        assert observe(tap, members, gid) == epoch
    for sender in members:
        send_application(sender, gid, members, b"still here: " + sender.name.encode())


def test_roost_observer_requires_group_info() -> None:
    """An mls-rs creator gives no GroupInfo, so the DS cannot start from the creator alone."""
    from .peer import PeerError

    with pytest.raises(PeerError):
        ObserverTap(MlsRsPeer(b"alice").create_group(new_group_id("nogi")))
    assert roost_observer(RoostPeer(b"alice").create_group(new_group_id("gi"))).commits == 0
