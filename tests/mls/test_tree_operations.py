"""Official tree-operations vectors: apply one proposal to a tree, compare tree and tree hash."""

from __future__ import annotations

import pytest

from roost.mls.crypto import get_cipher_suite
from roost.mls.proposals import Add, Proposal, Remove, Update
from roost.mls.ratchet_tree import RatchetTree

from .vectors import cases, h


@pytest.mark.parametrize("case", cases("tree-operations"))
def test_tree_operation(case: dict) -> None:
    cs = get_cipher_suite(case["cipher_suite"])
    tree = RatchetTree.from_bytes(cs, h(case["tree_before"]))
    assert tree.to_bytes() == h(case["tree_before"])
    assert tree.tree_hash() == h(case["tree_hash_before"])

    proposal = Proposal.decode(h(case["proposal"]))
    body = proposal.body
    if isinstance(body, Add):
        index = tree.add_leaf(body.key_package.leaf_node)
        assert tree.leaf(index) == body.key_package.leaf_node
    elif isinstance(body, Update):
        tree.update_leaf(case["proposal_sender"], body.leaf_node)
    elif isinstance(body, Remove):
        tree.remove_leaf(body.removed)
        assert tree.leaf(body.removed) is None
    else:  # pragma: no cover - the vectors only hold these three
        pytest.fail(f"unexpected proposal {body!r}")

    assert tree.to_bytes() == h(case["tree_after"])
    assert tree.tree_hash() == h(case["tree_hash_after"])
    # The cached hash must equal a from-scratch computation of the same tree.
    assert RatchetTree.from_bytes(cs, tree.to_bytes()).tree_hash() == h(case["tree_hash_after"])
