"""One epoch of a member's state: what changes together at every commit."""

from __future__ import annotations

from dataclasses import dataclass

from ..key_schedule import EpochSecrets
from ..ratchet_tree import RatchetTree
from ..secret_tree import SecretTree
from ..treekem import TreePrivateState
from .state import PublicState


@dataclass(slots=True)
class EpochState:
    """Public state, epoch secrets, our private tree keys and the secret tree; a ``Group``
    swaps in a whole new ``EpochState`` at each commit, so a failure half-way never leaves a
    mixture of two epochs."""

    public: PublicState
    secrets: EpochSecrets
    tree_keys: TreePrivateState
    secret_tree: SecretTree
    leaf_index: int

    @classmethod
    def start(
        cls, public: PublicState, secrets: EpochSecrets, keys: TreePrivateState, leaf_index: int
    ) -> EpochState:
        """A fresh epoch: a new secret tree, and only the private keys that still match."""
        tree = public.tree
        drop_outside(keys, tree)
        keys.prune(tree)
        secret_tree = SecretTree(public.cs, secrets.encryption_secret, tree.leaf_count)
        return cls(public, secrets, keys, secret_tree, leaf_index)


def drop_outside(keys: TreePrivateState, tree: RatchetTree) -> None:
    """Forget keys of nodes beyond the tree's width (it shrinks when truncated)."""
    width = tree.node_width
    for x in [x for x in keys.keys if x >= width]:
        del keys.keys[x]
        keys.path_secrets.pop(x, None)
