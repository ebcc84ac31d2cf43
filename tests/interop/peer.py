"""Types shared by every interop peer (ts-mls, mls-rs, roost).

A *peer* is one MLS client: it owns its KeyPackages and the groups it is a member of. Every
peer class exposes the same method names so a test can pair any two implementations:

    key_package() -> bytes                         MLSMessage(KeyPackage)
    create_group(group_id) -> PublicGroupState     epoch 0
    add_members(group_id, [kp, ...]) -> CommitBundle
    join(welcome, ratchet_tree=None) -> bytes      the group id
    process(message) -> Received                   commit / proposal / application
    encrypt(group_id, plaintext) -> bytes          MLSMessage(PrivateMessage)
    self_update(group_id) -> CommitBundle          commit with a path, no proposals
    remove(group_id, leaf_index) -> CommitBundle
    export_group_info(group_id) -> PublicGroupState
    state(group_id) -> EpochState                  epoch, exporter secret, members, ...

Commits a peer creates are applied to its own state at once (no pending-commit step).
Handshake messages are always PublicMessage; application messages PrivateMessage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# The exporter label every peer uses in ``state()`` so states can be compared across
# implementations (RFC 9420 section 8.5, MLS-Exporter).
EXPORTER_LABEL = b"roost interop"
EXPORTER_CONTEXT = b""
EXPORTER_LENGTH = 32


class PeerError(Exception):
    """The peer implementation rejected an operation (e.g. an invalid message)."""


class PeerUnavailable(RuntimeError):
    """The peer implementation cannot run here (tool missing, not installed)."""


class PeerUnsupported(NotImplementedError):
    """The peer implementation's API cannot do this (see docs/interop.md)."""


@dataclass(frozen=True, slots=True)
class CommitBundle:
    commit: bytes  # MLSMessage(PublicMessage)
    welcome: bytes | None  # MLSMessage(Welcome), when members were added
    group_info: bytes | None  # MLSMessage(GroupInfo) for the new epoch, if the peer can make one
    ratchet_tree: bytes | None  # optional<Node> ratchet_tree<V> for the new epoch
    epoch: int | None = None  # the committer's epoch after applying the commit


@dataclass(frozen=True, slots=True)
class PublicGroupState:
    group_info: bytes | None
    ratchet_tree: bytes


@dataclass(frozen=True, slots=True)
class Received:
    kind: str  # "application" | "commit" | "proposal"
    group_id: bytes
    epoch: int | None  # receiver's epoch after processing (None if the peer cannot tell)
    data: bytes | None = None  # application data
    removed: bool = False  # this commit removed the receiver
    sender: Any = None  # implementation-specific sender handle (mls-rs SigningIdentity)


@dataclass(frozen=True, slots=True)
class Member:
    leaf_index: int
    identity: bytes | None  # basic credential identity
    signature_key: bytes


@dataclass(frozen=True, slots=True)
class EpochState:
    group_id: bytes
    epoch: int
    exporter: bytes  # MLS-Exporter(EXPORTER_LABEL, EXPORTER_CONTEXT, EXPORTER_LENGTH)
    epoch_authenticator: bytes | None = None  # None where the peer does not expose it
    tree_hash: bytes | None = None
    leaf_index: int | None = None
    members: tuple[Member, ...] = field(default_factory=tuple)

    def identities(self) -> set[bytes]:
        return {m.identity for m in self.members if m.identity is not None}


class MlsPeer(Protocol):
    name: str

    def key_package(self) -> bytes: ...
    def create_group(self, group_id: bytes) -> PublicGroupState: ...
    def add_members(self, group_id: bytes, key_packages: list[bytes]) -> CommitBundle: ...
    def join(self, welcome: bytes, ratchet_tree: bytes | None = None) -> bytes: ...
    def process(self, message: bytes) -> Received: ...
    def encrypt(self, group_id: bytes, plaintext: bytes) -> bytes: ...
    def self_update(self, group_id: bytes) -> CommitBundle: ...
    def remove(self, group_id: bytes, leaf_index: int) -> CommitBundle: ...
    def export_group_info(self, group_id: bytes) -> PublicGroupState: ...
    def state(self, group_id: bytes) -> EpochState: ...
