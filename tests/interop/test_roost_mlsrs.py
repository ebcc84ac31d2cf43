"""Roost <-> mls-rs interop: full group lifecycle both ways, followed by a roost GroupObserver."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "roost.mls.group", reason="roost.mls.group (member Group, GroupObserver) not present"
)

from . import roost_lifecycle as lifecycle  # noqa: E402
from .mlsrs_peer import MlsRsPeer  # noqa: E402
from .roost_peer import RoostPeer  # noqa: E402

THIRD = {"third=roost": RoostPeer, "third=mls-rs": MlsRsPeer}


@pytest.mark.parametrize("third", THIRD.values(), ids=THIRD.keys())
def test_roost_creates_mlsrs_joins(third) -> None:
    lifecycle.lifecycle_roost_creates(MlsRsPeer, third)


@pytest.mark.parametrize("third", THIRD.values(), ids=THIRD.keys())
def test_mlsrs_creates_roost_joins(third) -> None:
    lifecycle.lifecycle_other_creates(MlsRsPeer, third)


def test_proposals_by_reference() -> None:
    lifecycle.proposals_by_reference(MlsRsPeer)


@pytest.mark.parametrize("roost_creates", [True, False], ids=["roost-welcomes", "mls-rs-welcomes"])
def test_join_with_ratchet_tree_extension(roost_creates: bool) -> None:
    lifecycle.join_with_tree_extension(MlsRsPeer, roost_creates)


@pytest.mark.parametrize("roost_creates", [True, False], ids=["roost-adds-10", "mls-rs-adds-10"])
def test_add_ten_in_one_commit(roost_creates: bool) -> None:
    lifecycle.add_many(MlsRsPeer, roost_creates)


def test_mlsrs_cannot_process_external_proposals() -> None:
    """The wheel panics on external senders (poisoning the group), so MlsRsPeer refuses them
    (docs/interop.md); it also cannot create a group with external_senders."""
    from .peer import PeerUnsupported
    from .roost_peer import Homeserver

    server, tap, bob, gid = lifecycle.homeserver_group_with(MlsRsPeer)
    with pytest.raises(PeerUnsupported):
        bob.process(server.remove(tap, 0))
    bob.self_update(gid)  # the group is still usable afterwards
    with pytest.raises(PeerUnsupported):
        MlsRsPeer(b"alice").create_group(lifecycle.new_group_id("hs"), [Homeserver().extension])


def test_application_edge_cases() -> None:
    lifecycle.application_edge_cases(MlsRsPeer)


def test_tampered_messages_rejected() -> None:
    lifecycle.tampered_messages_rejected(MlsRsPeer)
