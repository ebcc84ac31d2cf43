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


@pytest.mark.parametrize(
    "roost_hosts", [True, False], ids=["ts-mls-joins-roost", "roost-joins-ts-mls"]
)
def test_external_commit_join(roost_hosts: bool) -> None:
    lifecycle.external_join(TsMlsPeer, roost_hosts)


def test_tsmls_external_pub_encoding_is_not_rfc() -> None:
    """Known ts-mls 1.6.4 bug (docs/interop.md): its external_pub extension holds the bare key,
    not `opaque HPKEPublicKey<V>`, and it cannot use an RFC one. The driver's shim (on by
    default) fixes both directions for the tests above; roost itself accepts the bare form
    when joining. If this test fails, ts-mls changed: update the docs and drop the shim."""
    from roost.mls import MLSMessage
    from roost.mls.constants import ExtensionType

    from .peer import PeerError

    host, erin = TsMlsPeer(b"alice"), RoostPeer(b"erin")
    gid = lifecycle.new_group_id("xpub")
    host.create_group(gid)
    native = host.export_group_info(gid, external_pub=True, rfc_external_pub=False)
    (ext,) = [
        e
        for e in MLSMessage.decode(native.group_info).body.extensions
        if e.extension_type == ExtensionType.EXTERNAL_PUB
    ]
    assert len(ext.extension_data) == 32  # bare X25519 key, no length prefix
    assert erin.join_external(native.group_info, native.ratchet_tree)[0] == gid

    roost_host, ts_erin = RoostPeer(b"alice"), TsMlsPeer(b"erin")
    gid = lifecycle.new_group_id("xpub")
    roost_host.create_group(gid)
    served = roost_host.export_group_info(gid)
    with pytest.raises(PeerError, match="Invalid public key"):
        ts_erin.join_external(served.group_info, served.ratchet_tree, rfc_external_pub=False)


def test_homeserver_remove_proposal_roost_only() -> None:
    """Baseline for the pinned failure below: roost members and observer handle it."""
    lifecycle.homeserver_removes()


def test_tsmls_cannot_use_rfc_external_senders() -> None:
    """Known ts-mls 1.6.4 bug (also in 2.0.0-rc.10; docs/interop.md): it reads each
    external_senders extension as ONE ExternalSender instead of `ExternalSender
    external_senders<V>` (RFC 9420 section 12.1.8.1), so it can neither create a group with
    Roost's homeserver as external sender nor process the homeserver's Remove proposal."""
    from .peer import PeerError
    from .roost_peer import Homeserver

    server, tap, bob, gid = lifecycle.homeserver_group_with(TsMlsPeer)
    with pytest.raises(PeerError, match="Could not decode ExternalSender"):
        bob.process(server.remove(tap, 0))
    with pytest.raises(PeerError, match="Could not decode external_senders"):
        TsMlsPeer(b"alice").create_group(lifecycle.new_group_id("hs"), [Homeserver().extension])


def test_application_edge_cases() -> None:
    lifecycle.application_edge_cases(TsMlsPeer)


def test_tampered_messages_rejected() -> None:
    lifecycle.tampered_messages_rejected(TsMlsPeer)


@pytest.mark.parametrize("roost_creates", [True, False], ids=["roost-group", "ts-mls-group"])
def test_psk_commits(roost_creates: bool) -> None:
    lifecycle.psk_commits(TsMlsPeer, roost_creates)
