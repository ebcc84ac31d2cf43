"""TreeKEM (RFC 9420 sections 7.4-7.6): encapsulate and decapsulate UpdatePaths.

The committer's steps are exposed separately because the GroupContext the path secrets are
encrypted under is the *provisional* one, whose tree hash covers the merged path (12.4.2):

    prepared = prepare_path(cs, tree, sender)          # tree now holds the new parent nodes
    tree.set_leaf(sender, commit_leaf_node(...))       # leaf with prepared.leaf_parent_hash
    context = GroupContext(..., tree_hash=tree.tree_hash(), ...).encode()
    path = encrypt_path(cs, tree, prepared, context, excluded_leaves=added)

``encap`` runs the four steps with two callbacks. A receiver merges first
(``RatchetTree.merge_update_path``), builds the same provisional context, then calls ``decap``.

``TreePrivateState`` is what a member keeps: its leaf's HPKE private key and the private keys
(and path secrets) of the parent nodes it knows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Unpack

from .constants import LeafNodeSource
from .crypto import CipherSuite
from .errors import ValidationError
from .leaf_node import LeafNode, LeafNodeChanges
from .ratchet_tree import RatchetTree
from .tree_math import common_ancestor
from .update_path import HPKECiphertext, UpdatePath, UpdatePathNode

_UPDATE_PATH_NODE = b"UpdatePathNode"
_LEAF_NODE_TBS = b"LeafNodeTBS"


def next_path_secret(cs: CipherSuite, path_secret: bytes) -> bytes:
    """path_secret[n+1] = DeriveSecret(path_secret[n], "path")."""
    return cs.derive_secret(path_secret, b"path")


def node_key_pair(cs: CipherSuite, path_secret: bytes) -> tuple[bytes, bytes]:
    """(private, public) HPKE key of the node holding ``path_secret`` (7.4)."""
    return cs.derive_hpke_key_pair(cs.derive_secret(path_secret, b"node"))


@dataclass
class TreePrivateState:
    """A member's private view of the tree: node index -> (HPKE private key, public key),
    including its own leaf, plus the path secrets of the parent nodes it learned."""

    leaf_index: int
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    path_secrets: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def for_leaf(
        cls, cs: CipherSuite, leaf_index: int, leaf_private_key: bytes
    ) -> TreePrivateState:
        state = cls(leaf_index)
        state.keys[2 * leaf_index] = (leaf_private_key, cs.hpke_public_key(leaf_private_key))
        return state

    @property
    def leaf_private_key(self) -> bytes:
        return self.keys[2 * self.leaf_index][0]

    def copy(self) -> TreePrivateState:
        return TreePrivateState(self.leaf_index, dict(self.keys), dict(self.path_secrets))

    def set_path_secret(self, cs: CipherSuite, node: int, path_secret: bytes) -> bytes:
        """Remember ``path_secret`` for ``node`` and its derived key pair; return the public key."""
        priv, pub = node_key_pair(cs, path_secret)
        self.keys[node] = (priv, pub)
        self.path_secrets[node] = path_secret
        return pub

    def private_key(self, node: int) -> bytes | None:
        entry = self.keys.get(node)
        return None if entry is None else entry[0]

    def is_consistent(self, tree: RatchetTree) -> bool:
        """Every key held matches the public key the tree has at that node."""
        return all(tree.encryption_key(x) == pub for x, (_, pub) in self.keys.items())

    def prune(self, tree: RatchetTree) -> None:
        """Forget keys of nodes that are now blank or were replaced (after a commit or Update)."""
        for x in [x for x, (_, pub) in self.keys.items() if tree.encryption_key(x) != pub]:
            del self.keys[x]
            self.path_secrets.pop(x, None)

    def add_joiner_path(
        self, cs: CipherSuite, tree: RatchetTree, committer: int, path_secret: bytes
    ) -> None:
        """Welcome path secret (12.4.3.1): ``path_secret`` is for the lowest common ancestor of
        this leaf and the committer's; derive upwards through the non-blank ancestors (exactly
        the committer's filtered direct path above that point) and check each public key."""
        x = common_ancestor(2 * self.leaf_index, 2 * committer)
        if x == 2 * self.leaf_index:
            raise ValidationError("the committer cannot be the joiner")
        while True:
            if tree.encryption_key(x) != self.set_path_secret(cs, x, path_secret):
                raise ValidationError(f"path secret does not match the public key of node {x}")
            while True:
                if x == tree.root:
                    return
                x = tree.parent(x)
                if tree.node(x) is not None:
                    break
            path_secret = next_path_secret(cs, path_secret)


@dataclass
class PreparedPath:
    """The committer's fresh path, merged into the tree but not yet encrypted."""

    sender: int
    leaf_private_key: bytes
    leaf_public_key: bytes
    # Filtered direct path of the sender, bottom-up, with the copath child of each node.
    path: list[tuple[int, int]]
    path_secrets: list[bytes]
    leaf_parent_hash: bytes
    commit_secret: bytes

    def private_state(self, cs: CipherSuite) -> TreePrivateState:
        state = TreePrivateState(self.sender)
        state.keys[2 * self.sender] = (self.leaf_private_key, self.leaf_public_key)
        for (node, _), secret in zip(self.path, self.path_secrets, strict=True):
            state.set_path_secret(cs, node, secret)
        return state

    def path_secret_for(self, leaf_index: int) -> tuple[int, bytes] | None:
        """(node, path secret) a new member at ``leaf_index`` gets in the Welcome: the secret of
        the lowest common ancestor with the sender, if that node is on the path."""
        lca = common_ancestor(2 * self.sender, 2 * leaf_index)
        for (node, _), secret in zip(self.path, self.path_secrets, strict=True):
            if node == lca:
                return node, secret
        return None


def prepare_path(
    cs: CipherSuite,
    tree: RatchetTree,
    sender: int,
    *,
    leaf_key_pair: tuple[bytes, bytes] | None = None,
    first_path_secret: bytes | None = None,
) -> PreparedPath:
    """Committer, steps 1-3 of 7.5: fresh leaf key, path secrets along the filtered direct path,
    node keys; the tree (after proposals) gets the new parent nodes and parent hashes."""
    if tree.leaf(sender) is None:
        raise ValidationError(f"path from blank leaf {sender}")
    leaf_priv, leaf_pub = leaf_key_pair or cs.generate_hpke_key_pair()
    path = tree.filtered_direct_path_with_copath(sender)
    secret = first_path_secret if first_path_secret is not None else os.urandom(cs.hash_len)
    secrets = []
    public_keys = []
    for _ in path:
        secrets.append(secret)
        public_keys.append(node_key_pair(cs, secret)[1])
        secret = next_path_secret(cs, secret)
    # With an empty filtered direct path the random secret itself is the commit secret.
    commit_secret = secret
    leaf_parent_hash = tree.merge_path_keys(sender, public_keys)
    return PreparedPath(sender, leaf_priv, leaf_pub, path, secrets, leaf_parent_hash, commit_secret)


def commit_leaf_node(
    cs: CipherSuite,
    current: LeafNode,
    encryption_key: bytes,
    parent_hash: bytes,
    signature_private_key: bytes,
    group_id: bytes,
    leaf_index: int,
    **changes: Unpack[LeafNodeChanges],
) -> LeafNode:
    """The committer's new leaf: source commit, new key and parent hash, signed (7.2).
    ``changes`` may override other fields (credential, capabilities, extensions)."""
    unsigned = replace(
        current,
        encryption_key=encryption_key,
        leaf_node_source=LeafNodeSource.COMMIT,
        lifetime=None,
        parent_hash=parent_hash,
        signature=b"",
        **changes,
    )
    signature = cs.sign_with_label(
        signature_private_key, _LEAF_NODE_TBS, unsigned.tbs(group_id, leaf_index)
    )
    return replace(unsigned, signature=signature)


def encrypt_path(
    cs: CipherSuite,
    tree: RatchetTree,
    prepared: PreparedPath,
    group_context: bytes,
    excluded_leaves: Iterable[int] = (),
) -> UpdatePath:
    """Committer, step 4: encrypt each path secret to the resolution of its copath child,
    leaving out the leaves added by this commit (they get the secret in the Welcome)."""
    leaf = tree.leaf(prepared.sender)
    if leaf is None or leaf.encryption_key != prepared.leaf_public_key:
        raise ValidationError("set the sender's new leaf node before encrypting the path")
    if leaf.parent_hash != prepared.leaf_parent_hash:
        raise ValidationError("the sender's new leaf node has the wrong parent_hash")
    excluded = tuple(excluded_leaves)
    nodes = []
    for (node, copath_child), secret in zip(prepared.path, prepared.path_secrets, strict=True):
        ciphertexts = []
        for target in tree.resolution(copath_child, excluded):
            key = tree.encryption_key(target)
            assert key is not None
            kem_output, ct = cs.encrypt_with_label(key, _UPDATE_PATH_NODE, group_context, secret)
            ciphertexts.append(HPKECiphertext(kem_output, ct))
        pub = tree.encryption_key(node)
        assert pub is not None
        nodes.append(UpdatePathNode(pub, tuple(ciphertexts)))
    return UpdatePath(leaf, tuple(nodes))


@dataclass
class EncapResult:
    update_path: UpdatePath
    commit_secret: bytes
    prepared: PreparedPath
    private_state: TreePrivateState


def encap(
    cs: CipherSuite,
    tree: RatchetTree,
    sender: int,
    make_leaf: Callable[[bytes, bytes], LeafNode],
    make_context: Callable[[bytes], bytes],
    excluded_leaves: Iterable[int] = (),
    *,
    leaf_key_pair: tuple[bytes, bytes] | None = None,
) -> EncapResult:
    """All committer steps: ``make_leaf(encryption_key, parent_hash)`` returns the signed new
    leaf node, ``make_context(tree_hash)`` the encoded provisional GroupContext. ``tree`` is
    modified in place (stage it on a copy)."""
    prepared = prepare_path(cs, tree, sender, leaf_key_pair=leaf_key_pair)
    tree.set_leaf(sender, make_leaf(prepared.leaf_public_key, prepared.leaf_parent_hash))
    context = make_context(tree.tree_hash())
    path = encrypt_path(cs, tree, prepared, context, excluded_leaves)
    return EncapResult(path, prepared.commit_secret, prepared, prepared.private_state(cs))


@dataclass
class DecapResult:
    commit_secret: bytes
    # Lowest common ancestor of receiver and sender, and the path secret decrypted for it.
    common_ancestor: int
    path_secret: bytes
    private_state: TreePrivateState


def decap(
    cs: CipherSuite,
    tree: RatchetTree,
    state: TreePrivateState,
    sender: int,
    path: UpdatePath,
    group_context: bytes,
    excluded_leaves: Sequence[int] = (),
) -> DecapResult:
    """Receiver side of 7.5. ``tree`` must already have ``path`` merged (so ``group_context``
    can carry its tree hash); ``state`` is not modified: the result holds the new state.
    Raises ``ValidationError`` (``CryptoError`` when decryption fails)."""
    me = state.leaf_index
    if me == sender:
        raise ValidationError("cannot decap one's own update path")
    fdp = tree.filtered_direct_path_with_copath(sender)
    if len(fdp) != len(path.nodes):
        raise ValidationError("update path length does not match the filtered direct path")
    lca = common_ancestor(2 * me, 2 * sender)
    try:
        i = next(k for k, (node, _) in enumerate(fdp) if node == lca)
    except StopIteration:
        raise ValidationError("receiver is not below the update path") from None

    resolution = tree.resolution(fdp[i][1], excluded_leaves)
    ciphertexts = path.nodes[i].encrypted_path_secret
    if len(ciphertexts) != len(resolution):
        raise ValidationError("update path node has the wrong number of ciphertexts")
    # Exactly one node of the resolution lies on our own path; we hold its current key.
    match = next(
        (
            (j, state.keys[t][0])
            for j, t in enumerate(resolution)
            if t in state.keys and tree.encryption_key(t) == state.keys[t][1]
        ),
        None,
    )
    if match is None:
        raise ValidationError("no private key for any node in the copath resolution")
    j, private_key = match
    ct = ciphertexts[j]
    secret = cs.decrypt_with_label(
        private_key, _UPDATE_PATH_NODE, group_context, ct.kem_output, ct.ciphertext
    )

    new_state = state.copy()
    new_state.prune(tree)
    first_secret = secret
    for k in range(i, len(fdp)):
        node = fdp[k][0]
        if new_state.set_path_secret(cs, node, secret) != path.nodes[k].encryption_key:
            raise ValidationError(f"derived public key of node {node} does not match the path")
        secret = next_path_secret(cs, secret)
    return DecapResult(secret, lca, first_secret, new_state)
