"""One epoch of a member's state: what changes together at every commit."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..key_schedule import EpochSecrets
from ..protection import ApplicationKeys
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
    # Per-epoch constants of application messages, made on first use (not persisted).
    _app: ApplicationKeys | None = field(default=None, repr=False, compare=False)

    def application_keys(self) -> ApplicationKeys:
        app = self._app
        if app is None:
            public = self.public
            tree = public.tree

            def signature_key_of(leaf_index: int) -> bytes | None:
                leaf = tree.leaf(leaf_index)
                return None if leaf is None else leaf.signature_key

            app = self._app = ApplicationKeys(
                public.cs,
                public.group_id,
                public.epoch,
                public.context_bytes,
                self.secret_tree,
                self.secrets.sender_data_secret,
                signature_key_of,
            )
        return app

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
