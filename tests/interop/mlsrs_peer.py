"""mls-rs (Rust, through the ``agentvault-mls-rs-uniffi`` wheel) as an interop peer.

The wheel exposes a small slice of mls-rs; docs/interop.md lists what it cannot do. Work-arounds
used here, all confined to this file:

* Epoch and tree hash: the wheel has no getter. We plug in our own ``GroupStateStorage`` and
  read the GroupContext at the start of the state snapshot mls-rs writes (a u16 snapshot
  version, then the RFC 9420 GroupContext encoding).
* Group id after a join: taken from the same storage write.
* Removal by leaf index: mls-rs removes by ``SigningIdentity`` handle, which has no public
  constructor. We map signature public keys to handles for (a) every MlsRsPeer in this process
  and (b) every member whose PublicMessage (commit/proposal) this peer has processed. A leaf
  outside both sets cannot be removed by an mls-rs peer (``PeerUnsupported``).
* Own commits: mls-rs leaves them pending; we apply them at once by processing our own commit.
* External / new-member senders: the wheel panics (``todo!``) and poisons the group, so
  ``process`` refuses such PublicMessages with ``PeerUnsupported`` before calling it.
"""

from __future__ import annotations

from typing import Any

from roost.mls.codec import Reader

from .peer import (
    EXPORTER_CONTEXT,
    EXPORTER_LABEL,
    EXPORTER_LENGTH,
    CommitBundle,
    EpochState,
    PeerError,
    PeerUnavailable,
    PeerUnsupported,
    PublicGroupState,
    Received,
)
from .wire import (
    SENDER_MEMBER,
    message_group_id,
    public_message_sender,
    public_message_sender_leaf,
    tree_members,
)

try:
    import mls_rs_uniffi as mls_rs
except ImportError as e:  # pragma: no cover - the wheel is a test dependency
    mls_rs = None
    _import_error: ImportError | None = e
else:
    _import_error = None


def ensure_installed() -> None:
    if mls_rs is None:
        raise PeerUnavailable(
            "mls-rs interop needs the 'agentvault-mls-rs-uniffi' wheel "
            f"(pip install -c constraints.txt -e '.[test]'): {_import_error}"
        )


class _MemoryStorage:
    """In-memory GroupStateStorage that keeps the latest snapshot per group.

    Subclasses the wheel's callback interface at runtime (see ``_storage_class``).
    """

    def __init__(self) -> None:
        self.states: dict[bytes, bytes] = {}
        self.epochs: dict[tuple[bytes, int], bytes] = {}
        self.last_written: bytes | None = None

    def state(self, group_id: bytes) -> bytes | None:
        return self.states.get(bytes(group_id))

    def epoch(self, group_id: bytes, epoch_id: int) -> bytes | None:
        return self.epochs.get((bytes(group_id), epoch_id))

    def write(self, group_id: bytes, group_state: bytes, epoch_inserts: list, epoch_updates: list):
        gid = bytes(group_id)
        self.states[gid] = bytes(group_state)
        for record in (*epoch_inserts, *epoch_updates):
            self.epochs[(gid, record.id)] = bytes(record.data)
        self.last_written = gid

    def max_epoch_id(self, group_id: bytes) -> int | None:
        gid = bytes(group_id)
        ids = [e for (g, e) in self.epochs if g == gid]
        return max(ids) if ids else None


_storage_cls: type | None = None


def _new_storage() -> Any:
    global _storage_cls
    if _storage_cls is None:
        _storage_cls = type("MlsRsMemoryStorage", (_MemoryStorage, mls_rs.GroupStateStorage), {})
    return _storage_cls()


def _snapshot_context(snapshot: bytes) -> tuple[bytes, int, bytes]:
    """(group_id, epoch, tree_hash) from an mls-rs state snapshot."""
    r = Reader(snapshot)
    r.u16()  # mls-rs snapshot format version
    if r.u16() != 1:  # GroupContext.version = mls10
        raise PeerError("unexpected mls-rs snapshot layout")
    r.u16()  # cipher_suite
    group_id = r.opaque()
    epoch = r.u64()
    tree_hash = r.opaque()
    return group_id, epoch, tree_hash


# Signature public key -> SigningIdentity handle, shared by all mls-rs peers in the process.
_known_identities: dict[bytes, Any] = {}


def _wrap_error(op: str, e: Exception) -> PeerError:
    return PeerError(f"mls-rs {op}: {e!r}")


class MlsRsPeer:
    """One mls-rs client (basic credential, cipher suite 1 = CURVE25519_AES128)."""

    implementation = "mls-rs"

    def __init__(self, identity: bytes, *, ratchet_tree_extension: bool = False) -> None:
        ensure_installed()
        self.identity = identity
        self.name = f"mls-rs:{identity.decode(errors='replace')}"
        self._keypair = mls_rs.generate_signature_keypair(mls_rs.CipherSuite.CURVE25519_AES128)
        self._storage = _new_storage()
        config = mls_rs.ClientConfig(
            group_state_storage=self._storage, use_ratchet_tree_extension=ratchet_tree_extension
        )
        self._client = mls_rs.Client(identity, self._keypair, config)
        self.signing_identity = self._client.signing_identity()
        self.signature_key = bytes(self._keypair.public_key.bytes)
        _known_identities[self.signature_key] = self.signing_identity
        self._groups: dict[bytes, Any] = {}

    # -- helpers ---------------------------------------------------------------------------

    def _group(self, group_id: bytes) -> Any:
        try:
            return self._groups[group_id]
        except KeyError:
            raise PeerError(f"mls-rs: not a member of group {group_id.hex()}") from None

    def _tree(self, group_id: bytes) -> bytes:
        return bytes(self._group(group_id).export_tree().bytes)

    def _snapshot(self, group_id: bytes) -> bytes:
        self._group(group_id).write_to_storage()
        return self._storage.states[group_id]

    def _epoch(self, group_id: bytes) -> int:
        return _snapshot_context(self._snapshot(group_id))[1]

    def _apply_own(self, group_id: bytes, out: Any) -> CommitBundle:
        """Apply a commit this peer just created, then bundle what others need."""
        group = self._group(group_id)
        try:
            group.process_incoming_message(out.commit_message)
        except mls_rs.Error as e:
            raise _wrap_error("apply own commit", e) from e
        tree = out.ratchet_tree.bytes if out.ratchet_tree is not None else self._tree(group_id)
        return CommitBundle(
            commit=bytes(out.commit_message.to_bytes()),
            welcome=None if out.welcome_message is None else bytes(out.welcome_message.to_bytes()),
            group_info=None if out.group_info is None else bytes(out.group_info.to_bytes()),
            ratchet_tree=bytes(tree),
            epoch=self._epoch(group_id),
        )

    # -- peer API --------------------------------------------------------------------------

    def key_package(self) -> bytes:
        return bytes(self._client.generate_key_package_message().to_bytes())

    def create_group(
        self, group_id: bytes, extensions: list[tuple[int, bytes]] = ()
    ) -> PublicGroupState:
        if extensions:
            raise PeerUnsupported("mls-rs wheel: no GroupContext extensions at group creation")
        self._groups[group_id] = self._client.create_group(group_id)
        return PublicGroupState(None, self._tree(group_id))

    def add_members(self, group_id: bytes, key_packages: list[bytes]) -> CommitBundle:
        try:
            msgs = [mls_rs.Message.from_bytes(kp) for kp in key_packages]
            out = self._group(group_id).add_members(msgs)
        except mls_rs.Error as e:
            raise _wrap_error("add_members", e) from e
        return self._apply_own(group_id, out)

    def join(self, welcome: bytes, ratchet_tree: bytes | None = None) -> bytes:
        tree = None if ratchet_tree is None else mls_rs.RatchetTree(bytes=ratchet_tree)
        try:
            info = self._client.join_group(tree, mls_rs.Message.from_bytes(welcome))
        except mls_rs.Error as e:
            raise _wrap_error("join", e) from e
        group = info.group
        self._storage.last_written = None
        group.write_to_storage()  # the only way to learn the group id
        group_id = self._storage.last_written
        assert group_id is not None
        self._groups[group_id] = group
        return group_id

    def process(self, message: bytes) -> Received:
        group_id = message_group_id(message)
        group = self._group(group_id)
        sender = public_message_sender(message)
        if sender is not None and sender[0] != SENDER_MEMBER:
            # The wheel panics on external / new-member senders ("not yet implemented") and
            # the panic poisons the group's lock for good; refuse before handing it over.
            raise PeerUnsupported(f"mls-rs wheel cannot process sender type {sender[0]}")
        sender_leaf = public_message_sender_leaf(message)
        sender_key = None
        if sender_leaf is not None:
            by_leaf = {m.leaf_index: m.signature_key for m in tree_members(self._tree(group_id))}
            sender_key = by_leaf.get(sender_leaf)
        try:
            r = group.process_incoming_message(mls_rs.Message.from_bytes(message))
        except mls_rs.Error as e:
            raise _wrap_error("process", e) from e
        if r.is_application_message():
            return Received(
                "application", group_id, self._epoch(group_id), bytes(r.data), False, r.sender
            )
        if r.is_commit():
            if sender_key is not None:
                _known_identities.setdefault(sender_key, r.committer)
            removed = r.effect.is_removed()
            epoch = None if removed else self._epoch(group_id)
            return Received("commit", group_id, epoch, None, removed, r.committer)
        if r.is_received_proposal():
            if sender_key is not None:
                _known_identities.setdefault(sender_key, r.sender)
            return Received("proposal", group_id, self._epoch(group_id), None, False, r.sender)
        raise PeerError(f"mls-rs process: unexpected result {r}")

    def encrypt(self, group_id: bytes, plaintext: bytes) -> bytes:
        try:
            return bytes(self._group(group_id).encrypt_application_message(plaintext).to_bytes())
        except mls_rs.Error as e:
            raise _wrap_error("encrypt", e) from e

    def self_update(self, group_id: bytes) -> CommitBundle:
        """Empty commit: mls-rs always includes a path then. Also commits pending proposals."""
        try:
            out = self._group(group_id).commit()
        except mls_rs.Error as e:
            raise _wrap_error("commit", e) from e
        return self._apply_own(group_id, out)

    commit_pending = self_update

    def _identity_at(self, group_id: bytes, leaf_index: int) -> Any:
        by_leaf = {m.leaf_index: m.signature_key for m in tree_members(self._tree(group_id))}
        if leaf_index not in by_leaf:
            raise PeerError(f"mls-rs: leaf {leaf_index} is blank")
        ident = _known_identities.get(by_leaf[leaf_index])
        if ident is None:
            raise PeerUnsupported(
                f"mls-rs: no SigningIdentity handle for leaf {leaf_index} (the wheel can only "
                "remove members it has seen commit/propose or that live in this process)"
            )
        return ident

    def remove(self, group_id: bytes, leaf_index: int) -> CommitBundle:
        ident = self._identity_at(group_id, leaf_index)
        try:
            out = self._group(group_id).remove_members([ident])
        except mls_rs.Error as e:
            raise _wrap_error("remove", e) from e
        return self._apply_own(group_id, out)

    def propose_remove(self, group_id: bytes, leaf_index: int) -> bytes:
        ident = self._identity_at(group_id, leaf_index)
        try:
            (msg,) = self._group(group_id).propose_remove_members([ident])
        except mls_rs.Error as e:
            raise _wrap_error("propose_remove", e) from e
        return bytes(msg.to_bytes())

    def propose_add(self, group_id: bytes, key_package: bytes) -> bytes:
        try:
            kp = mls_rs.Message.from_bytes(key_package)
            (msg,) = self._group(group_id).propose_add_members([kp])
        except mls_rs.Error as e:
            raise _wrap_error("propose_add", e) from e
        return bytes(msg.to_bytes())

    def export_group_info(self, group_id: bytes) -> PublicGroupState:
        # The wheel cannot produce a GroupInfo; the tree is all we can give.
        return PublicGroupState(None, self._tree(group_id))

    def state(
        self,
        group_id: bytes,
        label: bytes = EXPORTER_LABEL,
        context: bytes = EXPORTER_CONTEXT,
        length: int = EXPORTER_LENGTH,
    ) -> EpochState:
        group = self._group(group_id)
        gid, epoch, tree_hash = _snapshot_context(self._snapshot(group_id))
        assert gid == group_id
        members = tree_members(self._tree(group_id))
        own = next((m.leaf_index for m in members if m.signature_key == self.signature_key), None)
        return EpochState(
            group_id=group_id,
            epoch=epoch,
            exporter=bytes(group.export_secret(label, context, length)),
            epoch_authenticator=None,  # not exposed by the wheel
            tree_hash=tree_hash,
            leaf_index=own,
            members=members,
        )
