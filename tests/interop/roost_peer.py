"""roost.mls as an interop peer (same interface as TsMlsPeer / MlsRsPeer), plus the observer tap.

``RoostPeer`` wraps ``roost.mls.Group``: commits are merged at once (the harness's convention),
handshakes are PublicMessage (roost's default). ``ObserverTap`` is the Delivery Service's view:
a ``roost.mls.GroupObserver`` fed every PublicMessage commit, checked against the members.
"""

from __future__ import annotations

import os
from typing import Any

from roost.mls import (
    Credential,
    Group,
    GroupObserver,
    KeyPackageBundle,
    MLSMessage,
    PreSharedKeyID,
    generate_key_package,
    get_cipher_suite,
)
from roost.mls.constants import ResumptionPSKUsage
from roost.mls.extensions import Extension
from roost.mls.key_package import KeyPackage
from roost.mls.welcome import Welcome

from .peer import (
    EXPORTER_CONTEXT,
    EXPORTER_LABEL,
    EXPORTER_LENGTH,
    CommitBundle,
    EpochState,
    Member,
    PeerError,
    PublicGroupState,
    Received,
)
from .wire import message_group_id

SUITE = 1


def _key_package(data: bytes) -> KeyPackage:
    body = MLSMessage.decode(data).body
    if not isinstance(body, KeyPackage):
        raise PeerError(f"expected an MLSMessage(KeyPackage), got {type(body).__name__}")
    return body


class RoostPeer:
    """One roost.mls client (basic credential, cipher suite 1)."""

    implementation = "roost"

    def __init__(self, identity: bytes, *, ratchet_tree_extension: bool = False) -> None:
        self.identity = identity
        self.name = f"roost:{identity.decode(errors='replace')}"
        self.cs = get_cipher_suite(SUITE)
        self._sig_priv, self.signature_key = self.cs.generate_signature_key_pair()
        self.credential = Credential.basic(identity)
        self.ratchet_tree_extension = ratchet_tree_extension
        self._bundles: list[tuple[bytes, KeyPackageBundle]] = []  # (KeyPackageRef, bundle)
        self.groups: dict[bytes, Group] = {}
        self.external_psks: dict[bytes, bytes] = {}

    def _group(self, group_id: bytes) -> Group:
        try:
            return self.groups[group_id]
        except KeyError:
            raise PeerError(f"roost: not a member of group {group_id.hex()}") from None

    def _merged(self, group: Group, out: Any) -> CommitBundle:
        group.merge_pending_commit()
        return CommitBundle(
            commit=out.commit,
            welcome=out.welcome,
            group_info=out.group_info,
            ratchet_tree=group.tree.to_bytes(),
            epoch=group.epoch,
        )

    def key_package(self) -> bytes:
        bundle = generate_key_package(SUITE, self.credential, self._sig_priv)
        kp_bytes = bundle.key_package.encode()
        self._bundles.append((self.cs.key_package_ref(kp_bytes), bundle))
        return MLSMessage(bundle.key_package).encode()

    def create_group(
        self, group_id: bytes, extensions: list[tuple[int, bytes]] = ()
    ) -> PublicGroupState:
        """``extensions``: GroupContext extensions as (type, extension_data)."""
        exts = [Extension(t, d) for t, d in extensions]
        g = Group.create(SUITE, self.credential, self._sig_priv, group_id=group_id, extensions=exts)
        self.groups[group_id] = g
        return PublicGroupState(g.group_info(with_tree=False), g.tree.to_bytes())

    def add_members(self, group_id: bytes, key_packages: list[bytes]) -> CommitBundle:
        g = self._group(group_id)
        kps = [_key_package(kp) for kp in key_packages]
        out = g.commit(
            add=kps, include_pending=False, ratchet_tree_in_welcome=self.ratchet_tree_extension
        )
        return self._merged(g, out)

    def join(self, welcome: bytes, ratchet_tree: bytes | None = None) -> bytes:
        w = MLSMessage.decode(welcome).body
        if not isinstance(w, Welcome):
            raise PeerError(f"expected an MLSMessage(Welcome), got {type(w).__name__}")
        for i, (ref, bundle) in enumerate(self._bundles):
            if w.find_secrets(ref) is not None:
                g = Group.join_from_welcome(
                    w, bundle, ratchet_tree, external_psks=self.external_psks
                )
                del self._bundles[i]  # single use
                self.groups[g.group_id] = g
                return g.group_id
        raise PeerError("roost join: Welcome is not addressed to any of our KeyPackages")

    def process(self, message: bytes) -> Received:
        group_id = message_group_id(message)
        g = self._group(group_id)
        r = g.process(message)
        return Received(
            kind=r.kind,
            group_id=group_id,
            epoch=g.epoch,
            data=r.data if r.kind == "application" else None,
            removed=r.removed_self,
            sender=r.sender,
        )

    def encrypt(self, group_id: bytes, plaintext: bytes, *, padding: int = 0) -> bytes:
        return self._group(group_id).encrypt(plaintext, padding=padding)

    def reload(self, group_id: bytes) -> None:
        """Persist the member state and continue from the stored bytes (a client restart)."""
        self.groups[group_id] = Group.from_bytes(self._group(group_id).to_bytes())

    def self_update(self, group_id: bytes) -> CommitBundle:
        g = self._group(group_id)
        return self._merged(g, g.commit(include_pending=False, force_path=True))

    def commit_pending(self, group_id: bytes) -> CommitBundle:
        g = self._group(group_id)
        out = g.commit(include_pending=True, ratchet_tree_in_welcome=self.ratchet_tree_extension)
        return self._merged(g, out)

    def add_external_psk(self, psk_id: bytes, secret: bytes) -> None:
        self.external_psks[psk_id] = secret
        for g in self.groups.values():
            g.external_psks[psk_id] = secret

    def commit_psk(
        self, group_id: bytes, *, psk_id: bytes | None = None, resumption_epoch: int | None = None
    ) -> CommitBundle:
        """Commit one PreSharedKey proposal: external ``psk_id`` or a resumption PSK."""
        g = self._group(group_id)
        nonce = os.urandom(self.cs.hash_len)
        if psk_id is not None:
            pid = PreSharedKeyID.external(psk_id, nonce)
        else:
            assert resumption_epoch is not None
            pid = PreSharedKeyID.resumption(
                ResumptionPSKUsage.APPLICATION, group_id, resumption_epoch, nonce
            )
        return self._merged(g, g.commit(psks=[pid], include_pending=False))

    def remove(self, group_id: bytes, leaf_index: int) -> CommitBundle:
        g = self._group(group_id)
        return self._merged(g, g.commit(remove=[leaf_index], include_pending=False))

    def propose_add(self, group_id: bytes, key_package: bytes) -> bytes:
        return self._group(group_id).propose_add(_key_package(key_package))

    def propose_remove(self, group_id: bytes, leaf_index: int) -> bytes:
        return self._group(group_id).propose_remove(leaf_index)

    def propose_update(self, group_id: bytes) -> bytes:
        """An Update proposal with a fresh leaf encryption key (committed by someone else)."""
        return self._group(group_id).propose_update()

    def export_group_info(self, group_id: bytes, **_ignored: bool) -> PublicGroupState:
        """Roost's GroupInfo always carries external_pub (others may join externally)."""
        g = self._group(group_id)
        return PublicGroupState(g.group_info(with_tree=False), g.tree.to_bytes())

    def join_external(
        self, group_info: bytes, ratchet_tree: bytes | None = None
    ) -> tuple[bytes, CommitBundle]:
        """Join by external commit; returns (group id, the commit for the group and the DS)."""
        g, commit = Group.join_external(group_info, ratchet_tree, self.credential, self._sig_priv)
        self.groups[g.group_id] = g
        bundle = CommitBundle(commit, None, g.group_info(), g.tree.to_bytes(), g.epoch)
        return g.group_id, bundle

    def state(
        self,
        group_id: bytes,
        label: bytes = EXPORTER_LABEL,
        context: bytes = EXPORTER_CONTEXT,
        length: int = EXPORTER_LENGTH,
    ) -> EpochState:
        g = self._group(group_id)
        members = tuple(
            Member(i, cred.identity if cred.credential_type == 1 else None, key)
            for i, cred, key in g.roster()
        )
        return EpochState(
            group_id=group_id,
            epoch=g.epoch,
            exporter=g.export_secret(label, context, length),
            epoch_authenticator=g.epoch_authenticator,
            tree_hash=g.group_context.tree_hash,
            leaf_index=g.leaf_index,
            members=members,
        )


class ObserverTap:
    """The DS's view of one group: a GroupObserver fed every PublicMessage commit.

    Like the DS, it persists the observer after every message and continues from the stored
    bytes (``GroupObserver.to_bytes`` / ``from_bytes``), so persistence is exercised too."""

    def __init__(self, start: PublicGroupState) -> None:
        if start.group_info is None:
            raise PeerError("the observer needs a signed GroupInfo to start")
        # An empty tree means the GroupInfo carries it (core-crypto hands out no tree aside).
        tree = start.ratchet_tree or None
        self.observer = GroupObserver.from_group_info(start.group_info, tree)
        self.commits = 0

    def _reload(self) -> None:
        self.observer = GroupObserver.from_bytes(self.observer.to_bytes())

    def apply(self, commit: bytes, bundle: CommitBundle | None = None) -> None:
        got = self.observer.apply(commit)
        assert got.kind == "commit", got
        self.commits += 1
        self._reload()
        if bundle is not None:
            if bundle.group_info is not None:
                self.observer.check_group_info(bundle.group_info)
            if bundle.epoch is not None:
                assert self.observer.epoch == bundle.epoch
            if bundle.ratchet_tree is not None:
                assert self.observer.tree.to_bytes() == bundle.ratchet_tree

    def apply_proposal(self, proposal: bytes) -> None:
        assert self.observer.apply(proposal).kind == "proposal"
        self._reload()

    def assert_tracks(self, state: EpochState) -> None:
        """The observer's public state equals a member's view."""
        assert self.observer.epoch == state.epoch
        assert self.observer.group_context.tree_hash == state.tree_hash
        roster = {(i, key) for i, _cred, key in self.observer.roster()}
        assert roster == {(m.leaf_index, m.signature_key) for m in state.members}


def roost_observer_for(start: PublicGroupState) -> ObserverTap:
    return ObserverTap(start)


class Homeserver:
    """The DS as an external sender (the group's ``external_senders`` extension, index 0)."""

    def __init__(self, name: bytes = b"homeserver") -> None:
        from roost.mls import external_senders_extension

        cs = get_cipher_suite(SUITE)
        self._sig_priv, self.signature_key = cs.generate_signature_key_pair()
        ext = external_senders_extension([(self.signature_key, Credential.basic(name))])
        self.extension = (ext.extension_type, ext.extension_data)

    def remove(self, tap: ObserverTap, leaf_index: int) -> bytes:
        """A Remove proposal for the observed group's current epoch (PublicMessage)."""
        from roost.mls import external_remove

        return external_remove(tap.observer.group_context, 0, self._sig_priv, leaf_index)
