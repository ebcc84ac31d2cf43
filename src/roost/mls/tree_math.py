"""Array-based binary tree math (RFC 9420 section 4.1 / Appendix C), on node indices.

Leaves sit at even node indices (leaf ``i`` is node ``2*i``); ``n`` is always the number
of LEAVES. All functions are pure integer operations; they raise ``ValueError`` when asked
for something that does not exist (the left child of a leaf, the parent of the root).
"""

from __future__ import annotations


def log2(x: int) -> int:
    """floor(log2(x)), with log2(0) == 0 as in the RFC."""
    return x.bit_length() - 1 if x > 0 else 0


def level(x: int) -> int:
    """Number of trailing 1 bits: 0 for leaves, the height above the leaves otherwise."""
    return (~x & (x + 1)).bit_length() - 1


def node_width(n: int) -> int:
    """Number of nodes of a tree with ``n`` leaves."""
    return 0 if n == 0 else 2 * (n - 1) + 1


def root(n: int) -> int:
    return (1 << log2(node_width(n))) - 1


def leaf_to_node(leaf_index: int) -> int:
    return leaf_index << 1


def node_to_leaf(x: int) -> int:
    if x & 1:
        raise ValueError(f"node {x} is not a leaf")
    return x >> 1


def left(x: int) -> int:
    k = level(x)
    if k == 0:
        raise ValueError("leaf node has no children")
    return x ^ (1 << (k - 1))


def right(x: int) -> int:
    k = level(x)
    if k == 0:
        raise ValueError("leaf node has no children")
    return x ^ (3 << (k - 1))


def _parent_step(x: int) -> int:
    k = level(x)
    b = (x >> (k + 1)) & 1
    return (x | (1 << k)) ^ (b << (k + 1))


def parent(x: int, n: int) -> int:
    if x == root(n):
        raise ValueError("root node has no parent")
    width = node_width(n)
    p = _parent_step(x)
    while p >= width:  # only for trees whose leaf count is not a power of two
        p = _parent_step(p)
    return p


def sibling(x: int, n: int) -> int:
    p = parent(x, n)
    return right(p) if x < p else left(p)


def direct_path(x: int, n: int) -> list[int]:
    """Parents of ``x`` from its parent up to and including the root."""
    r = root(n)
    out: list[int] = []
    while x != r:
        x = parent(x, n)
        out.append(x)
    return out


def copath(x: int, n: int) -> list[int]:
    """Siblings of ``x`` and of each node on its direct path below the root."""
    r = root(n)
    out: list[int] = []
    while x != r:
        out.append(sibling(x, n))
        x = parent(x, n)
    return out


def common_ancestor(x: int, y: int) -> int:
    """Lowest common ancestor of two nodes (in the infinite complete tree)."""
    lx, ly = level(x) + 1, level(y) + 1
    if lx <= ly and x >> ly == y >> ly:
        return y
    if ly <= lx and x >> lx == y >> lx:
        return x
    k = 0
    while x != y:
        x >>= 1
        y >>= 1
        k += 1
    return (x << k) + (1 << (k - 1)) - 1


def is_in_subtree(x: int, y: int) -> bool:
    """True if node ``y`` is ``x`` or below it."""
    k = level(x)
    return (y >> (k + 1)) == (x >> (k + 1))
