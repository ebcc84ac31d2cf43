"""Official tree-validation vectors: per-node resolutions and tree hashes, parent-hash validity,
and leaf signatures (the vector's group_id is there for LeafNodeTBS)."""

from __future__ import annotations

import pytest

from roost.mls.crypto import get_cipher_suite
from roost.mls.ratchet_tree import RatchetTree

from .vectors import cases, h


@pytest.mark.parametrize("case", cases("tree-validation"))
def test_tree_validation(case: dict) -> None:
    cs = get_cipher_suite(case["cipher_suite"])
    tree = RatchetTree.from_bytes(cs, h(case["tree"]))
    assert tree.to_bytes() == h(case["tree"])
    assert tree.node_width == len(case["tree_hashes"]) == len(case["resolutions"])

    for x, want in enumerate(case["resolutions"]):
        assert tree.resolution(x) == want, f"resolution of node {x}"
    for x, want in enumerate(case["tree_hashes"]):
        assert tree.node_tree_hash(x) == h(want), f"tree hash of node {x}"
    assert tree.tree_hash() == h(case["tree_hashes"][tree.root])

    tree.verify_parent_hashes()
    tree.verify_unmerged_leaves()
    tree.verify_unique_keys()
    tree.verify_leaf_signatures(h(case["group_id"]))
