"""Roost <-> ts-mls interop: full group lifecycle both ways, followed by a roost GroupObserver."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "roost.mls.group", reason="roost.mls.group (member Group, GroupObserver) not present"
)

from . import roost_lifecycle as lifecycle  # noqa: E402
from .roost_peer import RoostPeer  # noqa: E402
from .tsmls_peer import TsMlsPeer  # noqa: E402

THIRD = {"third=roost": RoostPeer, "third=ts-mls": TsMlsPeer}


@pytest.mark.parametrize("third", THIRD.values(), ids=THIRD.keys())
def test_roost_creates_tsmls_joins(third) -> None:
    lifecycle.lifecycle_roost_creates(TsMlsPeer, third)


@pytest.mark.parametrize("third", THIRD.values(), ids=THIRD.keys())
def test_tsmls_creates_roost_joins(third) -> None:
    lifecycle.lifecycle_other_creates(TsMlsPeer, third)


def test_proposals_by_reference() -> None:
    lifecycle.proposals_by_reference(TsMlsPeer)


@pytest.mark.parametrize("roost_creates", [True, False], ids=["roost-welcomes", "ts-mls-welcomes"])
def test_join_with_ratchet_tree_extension(roost_creates: bool) -> None:
    lifecycle.join_with_tree_extension(TsMlsPeer, roost_creates)


@pytest.mark.parametrize("roost_creates", [True, False], ids=["roost-adds-10", "ts-mls-adds-10"])
def test_add_ten_in_one_commit(roost_creates: bool) -> None:
    lifecycle.add_many(TsMlsPeer, roost_creates)
