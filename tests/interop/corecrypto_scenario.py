"""Checks shared by the tests that put Wire's core-crypto in a group with other stacks.

core-crypto exposes no tree hash or leaf index and only one exporter label, so agreement is
checked on what it does expose: epoch, member identities (Wire client ids) and
MLS-Exporter("exporter", "") as every implementation computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .corecrypto_peer import (
    EXPORTER_CONTEXT,
    EXPORTER_LABEL,
    EXPORTER_LENGTH,
    CoreCryptoPeer,
    wire_client_id,
)
from .roost_peer import ObserverTap, RoostPeer

Member = RoostPeer | CoreCryptoPeer


def roost(name: bytes) -> RoostPeer:
    """A Roost client core-crypto accepts; its Welcomes carry the tree core-crypto needs."""
    return RoostPeer(wire_client_id(name, 0xA), ratchet_tree_extension=True)


def exporter(peer: Any, group_id: bytes) -> bytes:
    """core-crypto's exporter secret (fixed label), as each implementation computes it."""
    if isinstance(peer, CoreCryptoPeer):
        return peer.state(group_id).exporter
    return peer.state(group_id, EXPORTER_LABEL, EXPORTER_CONTEXT, EXPORTER_LENGTH).exporter


def agree(group_id: bytes, members: Sequence[Any], tap: ObserverTap | None = None) -> int:
    """Same epoch, member identities and exporter secret everywhere; the observer (if any)
    tracks every member that exposes its tree (all but core-crypto) exactly. Returns the
    common epoch."""
    states = [m.state(group_id) for m in members]
    secrets = [exporter(m, group_id) for m in members]
    epochs = {s.epoch for s in states}
    assert len(epochs) == 1, [(m.name, s.epoch) for m, s in zip(members, states, strict=True)]
    assert len(set(secrets)) == 1, "exporter secrets differ"
    assert len({s.tree_hash for s in states if s.tree_hash is not None}) <= 1, "tree hashes"
    expected = {m.identity for m in members}
    for m, s in zip(members, states, strict=True):
        assert s.identities() == expected, m.name
    if tap is not None:
        for m, s in zip(members, states, strict=True):
            if isinstance(m, CoreCryptoPeer):  # no leaf indices or tree hash to compare
                assert tap.observer.epoch == s.epoch
            else:
                tap.assert_tracks(s)
    return epochs.pop()


def leaf_of(group_id: bytes, viewer: Any, member: Any) -> int:
    (leaf,) = [
        m.leaf_index for m in viewer.state(group_id).members if m.identity == member.identity
    ]
    return leaf
