"""Assertions and message plumbing shared by the interop tests.

The helpers play the Delivery Service: they hand each commit to every other member and check
that all members agree afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .peer import CommitBundle, MlsPeer
from .wire import (
    WIRE_GROUP_INFO,
    WIRE_KEY_PACKAGE,
    WIRE_PRIVATE_MESSAGE,
    WIRE_PUBLIC_MESSAGE,
    WIRE_WELCOME,
    wire_format,
)

# Called with every PublicMessage commit and its bundle (e.g. to feed a roost GroupObserver).
CommitHook = Callable[[bytes, CommitBundle], None]


def check_bundle(bundle: CommitBundle, *, adds: bool) -> None:
    assert wire_format(bundle.commit) == WIRE_PUBLIC_MESSAGE, "commits must be PublicMessage"
    if adds:
        assert bundle.welcome is not None and wire_format(bundle.welcome) == WIRE_WELCOME
    else:
        assert bundle.welcome is None
    if bundle.group_info is not None:
        assert wire_format(bundle.group_info) == WIRE_GROUP_INFO


def key_package(peer: MlsPeer) -> bytes:
    kp = peer.key_package()
    assert wire_format(kp) == WIRE_KEY_PACKAGE
    return kp


def deliver_commit(
    bundle: CommitBundle,
    committer: MlsPeer,
    receivers: Iterable[MlsPeer],
    on_commit: CommitHook | None = None,
) -> None:
    """Fan a commit out to ``receivers`` and check each moved to the committer's epoch."""
    if on_commit is not None:
        on_commit(bundle.commit, bundle)
    for peer in receivers:
        if peer is committer:
            continue
        got = peer.process(bundle.commit)
        assert got.kind == "commit", (peer.name, got)
        assert not got.removed, f"{peer.name} unexpectedly removed"
        if got.epoch is not None and bundle.epoch is not None:
            assert got.epoch == bundle.epoch, (peer.name, got.epoch, bundle.epoch)


def send_application(
    sender: MlsPeer, group_id: bytes, receivers: Iterable[MlsPeer], text: bytes
) -> None:
    message = sender.encrypt(group_id, text)
    assert wire_format(message) == WIRE_PRIVATE_MESSAGE
    for peer in receivers:
        if peer is sender:
            continue
        got = peer.process(message)
        assert got.kind == "application", (peer.name, got)
        assert got.data == text, (peer.name, got.data)
        assert got.group_id == group_id


def assert_agree(group_id: bytes, members: list[MlsPeer]) -> int:
    """Every member sees the same epoch, exporter secret, tree hash and member list.

    Returns the common epoch.
    """
    states = [m.state(group_id) for m in members]
    first = states[0]
    for peer, st in zip(members, states, strict=True):
        where = f"{peer.name} vs {members[0].name}"
        assert st.epoch == first.epoch, where
        assert st.exporter == first.exporter, where
        assert st.tree_hash == first.tree_hash, where
        assert st.identities() == first.identities(), where
        if st.epoch_authenticator is not None and first.epoch_authenticator is not None:
            assert st.epoch_authenticator == first.epoch_authenticator, where
    # Each member finds itself at a distinct leaf.
    leaves = [st.leaf_index for st in states if st.leaf_index is not None]
    assert len(leaves) == len(set(leaves))
    return first.epoch
