"""tree-math.json: node_width, root, left, right, parent, sibling for every node."""

from __future__ import annotations

import pytest

from roost.mls import tree_math as tm

from .vectors import cases


def _opt(f, *args):
    try:
        return f(*args)
    except ValueError:
        return None


@pytest.mark.parametrize("case", cases("tree-math", ids=lambda i, c: f"{c['n_leaves']}-leaves"))
def test_tree_math_vector(case):
    n = case["n_leaves"]
    assert tm.node_width(n) == case["n_nodes"]
    assert tm.root(n) == case["root"]
    for x in range(case["n_nodes"]):
        assert _opt(tm.left, x) == case["left"][x]
        assert _opt(tm.right, x) == case["right"][x]
        assert _opt(tm.parent, x, n) == case["parent"][x]
        assert _opt(tm.sibling, x, n) == case["sibling"][x]


def test_paths_and_ancestors():
    # 8 leaves: root 7; leaf 0 (node 0) has direct path 1, 3, 7 and copath 2, 5, 11.
    assert tm.direct_path(0, 8) == [1, 3, 7]
    assert tm.copath(0, 8) == [2, 5, 11]
    assert tm.direct_path(7, 8) == [] and tm.copath(7, 8) == []
    assert tm.common_ancestor(0, 2) == 1
    assert tm.common_ancestor(0, 14) == 7
    assert tm.common_ancestor(4, 6) == 5
    assert tm.common_ancestor(5, 4) == 5
    assert tm.is_in_subtree(3, 6) and not tm.is_in_subtree(3, 8)
    assert tm.leaf_to_node(3) == 6 and tm.node_to_leaf(6) == 3
    with pytest.raises(ValueError):
        tm.node_to_leaf(5)
    assert tm.level(7) == 3 and tm.level(4) == 0


def test_common_ancestor_matches_direct_paths():
    n = 16
    for a in range(0, 2 * n - 1):
        for b in range(0, 2 * n - 1):
            pa = [a, *tm.direct_path(a, n)]
            pb = set([b, *tm.direct_path(b, n)])
            expected = next(x for x in pa if x in pb)
            assert tm.common_ancestor(a, b) == expected
