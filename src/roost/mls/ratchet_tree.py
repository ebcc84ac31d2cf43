"""The ratchet tree (RFC 9420 sections 4, 7.1-7.9 and 12.1).

``RatchetTree`` is the array form of a left-balanced binary tree: leaves at even node indices,
parent nodes at odd ones, ``None`` for a blank node. RFC 9420 trees are always *full* (the leaf
count is a power of two: the tree grows by doubling and shrinks by halving), so the parent of a
node is one closed-form bit operation (``tree_math`` handles general widths).

Tree hashes are cached per node. Invariant: a cached node hash implies cached child hashes, so
invalidating a node walks up only until it meets an ancestor that is already invalid.

``copy()`` is cheap (two list copies; nodes are immutable) so callers can stage a commit on a
copy and drop it if validation fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from functools import lru_cache
from itertools import compress, count, repeat
from operator import is_

from .codec import Writer, opaque
from .constants import LeafNodeSource, NodeType
from .crypto import CipherSuite
from .errors import DecodeError, ValidationError
from .leaf_node import LeafNode
from .tree_math import left, level, right
from .tree_nodes import Node, ParentNode, decode_tree_entries, encode_ratchet_tree
from .update_path import UpdatePath

TreeNode = LeafNode | ParentNode

_LEAF_TYPE = bytes((NodeType.LEAF,))
_PARENT_BLANK = bytes((NodeType.PARENT, 0))
_PARENT_PRESENT = bytes((NodeType.PARENT, 1))

_LEAF_NODE_TBS = b"LeafNodeTBS"


# --- full-tree node math -----------------------------------------------------------------


def _parent(x: int) -> int:
    """Parent in a full tree: ``tree_math.parent`` without the walk for non-full trees."""
    k = level(x)
    return (x | (1 << k)) & ~(1 << (k + 1))


# Paths depend only on (node, root) and every add, commit and hash walks them: memoise
# (bounded; the tuples are shared, callers get fresh lists).
@lru_cache(maxsize=1 << 15)
def _direct_path(x: int, root: int) -> tuple[int, ...]:
    out = []
    while x != root:
        x = _parent(x)
        out.append(x)
    return tuple(out)


@lru_cache(maxsize=1 << 15)
def _copath(x: int, root: int) -> tuple[int, ...]:
    out = []
    while x != root:
        p = _parent(x)
        out.append(right(p) if x < p else left(p))
        x = p
    return tuple(out)


def subtree_leaves(x: int) -> range:
    """Leaf indices below node ``x``."""
    k = level(x)
    first = (x >> (k + 1)) << k
    return range(first, first + (1 << k))


class RatchetTree:
    __slots__ = ("cs", "_nodes", "_hashes", "_key_index", "_encoded")

    def __init__(self, cs: CipherSuite, nodes: Sequence[TreeNode | None] = ()) -> None:
        nodes = list(nodes)
        if not nodes:
            raise ValueError("a ratchet tree has at least one leaf")
        # Smallest full tree (power-of-two leaf count) whose width covers every entry.
        n_leaves = 1 << (len(nodes) // 2).bit_length()
        nodes.extend([None] * (2 * n_leaves - 1 - len(nodes)))
        self.cs = cs
        # Leaves at even indices, parents at odd ones: a checker cannot see that invariant,
        # hence the narrow ``type: ignore``s where this class reads a node as its kind.
        self._nodes: list[TreeNode | None] = nodes
        self._hashes: list[bytes | None] = [None] * len(nodes)
        # Lazily built map from every encryption / signature key to its node (7.3 uniqueness).
        self._key_index: tuple[dict[bytes, int], dict[bytes, int]] | None = None
        # Cached ratchet_tree encoding: the observer compares it with every GroupInfo.
        self._encoded: bytes | None = None

    # --- construction and encoding ------------------------------------------------------

    @classmethod
    def one_member(cls, cs: CipherSuite, leaf: LeafNode) -> RatchetTree:
        return cls(cs, [leaf])

    @classmethod
    def from_nodes(cls, cs: CipherSuite, nodes: Sequence[Node | TreeNode | None]) -> RatchetTree:
        """Build from the wire array (``Node`` entries) and check positions of node types."""
        plain: list[TreeNode | None] = []
        for i, node in enumerate(nodes):
            if isinstance(node, Node):
                node = node.value
            if node is not None and isinstance(node, ParentNode) != bool(i & 1):
                raise DecodeError(f"ratchet tree entry {i} has the wrong node type")
            plain.append(node)
        if not plain:
            raise DecodeError("empty ratchet tree")
        if plain[-1] is None:
            raise DecodeError("ratchet tree ends with a blank node")
        return cls(cs, plain)

    @classmethod
    def from_bytes(cls, cs: CipherSuite, data: bytes) -> RatchetTree:
        """Decode ``optional<Node> ratchet_tree<V>`` (the ratchet_tree extension's data)."""
        return cls(cs, decode_tree_entries(data))  # checked as from_nodes does

    def to_bytes(self) -> bytes:
        """The ratchet_tree extension data; trailing blank nodes are dropped."""
        if self._encoded is None:
            self._encoded = encode_ratchet_tree(self._nodes)
        return self._encoded

    def nodes(self) -> list[TreeNode | None]:
        """The full array (a copy): leaves at even indices, ``None`` for blank."""
        return list(self._nodes)

    def copy(self) -> RatchetTree:
        new = RatchetTree.__new__(RatchetTree)
        new.cs = self.cs
        new._nodes = self._nodes.copy()
        new._hashes = self._hashes.copy()
        # Both caches are never mutated in place, so the copy may share them.
        new._key_index = self._key_index
        new._encoded = self._encoded
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RatchetTree):
            return NotImplemented
        return self.cs.suite_id == other.cs.suite_id and self._nodes == other._nodes

    __hash__ = None  # type: ignore[assignment]  # mutable

    # --- shape ----------------------------------------------------------------------------

    @property
    def node_width(self) -> int:
        return len(self._nodes)

    @property
    def leaf_count(self) -> int:
        return (len(self._nodes) + 1) // 2

    @property
    def root(self) -> int:
        return self.leaf_count - 1

    def parent(self, x: int) -> int:
        if x == self.root:
            raise ValueError("the root has no parent")
        return _parent(x)

    def sibling(self, x: int) -> int:
        p = self.parent(x)
        return right(p) if x < p else left(p)

    def direct_path(self, x: int) -> list[int]:
        """Ancestors of node ``x`` from its parent up to the root."""
        return list(_direct_path(x, self.root))

    def copath(self, x: int) -> list[int]:
        return list(_copath(x, self.root))

    # --- node access ----------------------------------------------------------------------

    def node(self, x: int) -> TreeNode | None:
        return self._nodes[x]

    def leaf(self, leaf_index: int) -> LeafNode | None:
        if not 0 <= leaf_index < self.leaf_count:
            return None
        return self._nodes[2 * leaf_index]  # type: ignore[return-value]

    def parent_node(self, x: int) -> ParentNode | None:
        return self._nodes[x]  # type: ignore[return-value]

    def leaves(self) -> Iterator[tuple[int, LeafNode]]:
        """(leaf index, leaf node) of every non-blank leaf, left to right."""
        nodes = self._nodes
        for x in range(0, len(nodes), 2):
            leaf = nodes[x]
            if leaf is not None:
                yield x >> 1, leaf  # type: ignore[misc]

    def member_count(self) -> int:
        return sum(1 for x in range(0, len(self._nodes), 2) if self._nodes[x] is not None)

    def encryption_key(self, x: int) -> bytes | None:
        """The node's public key; None when blank or outside the (possibly truncated) tree."""
        if not 0 <= x < len(self._nodes):
            return None
        node = self._nodes[x]
        return None if node is None else node.encryption_key

    # --- mutation primitives ---------------------------------------------------------------

    def _invalidate(self, x: int) -> None:
        hashes = self._hashes
        hashes[x] = None
        root = self.root
        while x != root:
            x = _parent(x)
            if hashes[x] is None:
                break  # everything above is already invalid (module invariant)
            hashes[x] = None

    def set_node(self, x: int, node: TreeNode | None) -> None:
        if node is not None and isinstance(node, ParentNode) != bool(x & 1):
            raise ValueError(f"node {x} cannot hold a {type(node).__name__}")
        self._nodes[x] = node
        self._key_index = None
        self._encoded = None
        self._invalidate(x)

    def set_leaf(self, leaf_index: int, leaf: LeafNode | None) -> None:
        self.set_node(2 * leaf_index, leaf)

    def blank_direct_path(self, leaf_index: int) -> None:
        for p in self.direct_path(2 * leaf_index):
            if self._nodes[p] is not None:
                self.set_node(p, None)

    def _extend(self) -> None:
        """Double the leaf count: the old tree becomes the left subtree of a new root."""
        width = len(self._nodes)
        self._nodes.extend([None] * (width + 1))
        self._hashes.extend([None] * (width + 1))

    def truncate(self) -> None:
        """Drop the right half while it holds no non-blank leaf (12.1.3)."""
        nodes = self._nodes
        while len(nodes) > 1:
            root = (len(nodes) - 1) // 2  # the right subtree is everything after the root
            if any(nodes[x] is not None for x in range(root + 1, len(nodes), 2)):
                break
            del nodes[root:]
            del self._hashes[root:]
            self._key_index = None
            self._encoded = None

    # --- membership changes (12.1.1-12.1.3) ----------------------------------------------------

    def add_leaf(self, leaf: LeafNode) -> int:
        """Put ``leaf`` in the leftmost blank leaf (extending the tree if full); return its index.

        The new leaf index joins the unmerged_leaves of every non-blank parent on its direct
        path (7.7), since those nodes' keys are not known to the new member.
        """
        # C-speed identity scan of the leaf slots (list.index(None) would call the
        # dataclass __eq__ of every occupied leaf: quadratic work over a 100-add commit).
        blank = next(compress(count(), map(is_, self._nodes[::2], repeat(None))), None)
        if blank is None:
            index = self.leaf_count
            self._extend()
        else:
            index = blank
        self.set_leaf(index, leaf)
        for p in self.direct_path(2 * index):
            node = self._nodes[p]
            if node is not None:
                assert isinstance(node, ParentNode)
                self.set_node(p, replace(node, unmerged_leaves=(*node.unmerged_leaves, index)))
        return index

    def update_leaf(self, leaf_index: int, leaf: LeafNode) -> None:
        """Apply an Update: new leaf, blank direct path."""
        if self.leaf(leaf_index) is None:
            raise ValidationError(f"update of blank leaf {leaf_index}")
        self.set_leaf(leaf_index, leaf)
        self.blank_direct_path(leaf_index)

    def remove_leaf(self, leaf_index: int) -> None:
        """Apply a Remove: blank the leaf and its direct path, then truncate."""
        if self.leaf(leaf_index) is None:
            raise ValidationError(f"remove of blank leaf {leaf_index}")
        self.set_leaf(leaf_index, None)
        self.blank_direct_path(leaf_index)
        self.truncate()

    # --- resolution and filtered direct path (4.1.2, 7.5) ---------------------------------

    def resolution(self, x: int, exclude: Iterable[int] = ()) -> list[int]:
        """Node indices covering the subtree at ``x``; ``exclude`` lists leaf indices to drop."""
        out: list[int] = []
        self._resolve(x, out)
        if exclude:
            skip = {2 * i for i in exclude}
            out = [n for n in out if n not in skip]
        return out

    def _resolve(self, x: int, out: list[int]) -> None:
        node = self._nodes[x]
        if node is not None:
            out.append(x)
            if x & 1:
                out.extend(2 * i for i in node.unmerged_leaves)  # type: ignore[union-attr]
        elif x & 1:
            self._resolve(left(x), out)
            self._resolve(right(x), out)

    def _resolution_empty(self, x: int) -> bool:
        nodes = self._nodes
        if nodes[x] is not None:
            return False
        if not x & 1:
            return True
        r = subtree_leaves(x)
        # A subtree without non-blank leaves has an empty resolution only if its parents are
        # blank too; any non-blank node makes it non-empty.
        lo, hi = 2 * r.start, 2 * r.stop - 1
        return all(nodes[i] is None for i in range(lo, hi))

    def filtered_direct_path_with_copath(self, leaf_index: int) -> list[tuple[int, int]]:
        """(parent node, its copath child) for each node of the filtered direct path (4.1.2)."""
        x = 2 * leaf_index
        root = self.root
        out = []
        while x != root:
            p = _parent(x)
            c = right(p) if x < p else left(p)
            if not self._resolution_empty(c):
                out.append((p, c))
            x = p
        return out

    def filtered_direct_path(self, leaf_index: int) -> list[int]:
        return [p for p, _ in self.filtered_direct_path_with_copath(leaf_index)]

    # --- tree hash (7.8) ---------------------------------------------------------------------

    def tree_hash(self) -> bytes:
        return self.node_tree_hash(self.root)

    def node_tree_hash(self, x: int) -> bytes:
        h = self._hashes[x]
        if h is None:
            h = self._compute_hash(x)
        return h

    def _compute_hash(self, x: int) -> bytes:
        k = level(x)
        lo, hi = x - (1 << k) + 1, x + (1 << k)  # x's subtree is nodes[lo:hi]
        if k >= 4 and self._hashes[lo:hi].count(None) > (hi - lo) >> 2:
            self._fill_subtree(lo, hi, k)  # mostly uncached (a decoded tree): bottom-up
            return self._hashes[x]  # type: ignore[return-value]
        # A few stale nodes (after a path update): iterative post-order from x, so deep
        # trees never hit the recursion limit and each cached subtree is reused as is.
        hashes = self._hashes
        stack = [x]
        while stack:
            y = stack[-1]
            if hashes[y] is not None:
                stack.pop()
                continue
            if not y & 1:
                hashes[y] = self._leaf_hash(y >> 1, self._nodes[y])  # type: ignore[arg-type]
                stack.pop()
                continue
            lc, rc = left(y), right(y)
            lh, rh = hashes[lc], hashes[rc]
            if lh is None or rh is None:
                if lh is None:
                    stack.append(lc)
                if rh is None:
                    stack.append(rc)
                continue
            hashes[y] = self._parent_hash_input_hash(self._nodes[y], lh, rh)  # type: ignore[arg-type]
            stack.pop()
        return hashes[x]  # type: ignore[return-value]

    def _fill_subtree(self, lo: int, hi: int, k: int) -> None:
        """Hash every uncached node of the level-``k`` subtree ``nodes[lo:hi]``, level by
        level: no stack, and a level-j node's children are simply x -/+ 2^(j-1)."""
        hashes, nodes = self._hashes, self._nodes
        leaf_hash, parent_hash = self._leaf_hash, self._parent_hash_input_hash
        for y in range(lo, hi, 2):
            if hashes[y] is None:
                hashes[y] = leaf_hash(y >> 1, nodes[y])  # type: ignore[arg-type]
        for j in range(1, k + 1):
            half = 1 << (j - 1)
            for y in range(lo + (1 << j) - 1, hi, 1 << (j + 1)):
                if hashes[y] is None:
                    hashes[y] = parent_hash(nodes[y], hashes[y - half], hashes[y + half])  # type: ignore[arg-type]

    def _leaf_hash(self, leaf_index: int, leaf: LeafNode | None) -> bytes:
        # TreeHashInput for a leaf, fed to the hash in pieces (no Writer, no joined copy):
        # node_type || leaf_index || optional<LeafNode>; the leaf's content is memoised.
        head = _LEAF_TYPE + leaf_index.to_bytes(4, "big")
        if leaf is None:
            return self.cs.hash(head + b"\x00")
        h = self.cs.hasher(head + b"\x01")
        h.update(leaf.content_bytes())
        h.update(opaque(leaf.signature))
        return h.digest()

    def _parent_hash_input_hash(self, node: ParentNode | None, lh: bytes, rh: bytes) -> bytes:
        # TreeHashInput for a parent: node_type || optional<ParentNode> || left || right.
        if node is None:
            head = _PARENT_BLANK
        else:
            unmerged = node.unmerged_leaves
            head = b"".join(
                (
                    _PARENT_PRESENT,
                    opaque(node.encryption_key),
                    opaque(node.parent_hash),
                    opaque(b"".join(i.to_bytes(4, "big") for i in unmerged))
                    if unmerged
                    else b"\x00",
                )
            )
        return self.cs.hash(head + opaque(lh) + opaque(rh))

    def _tree_hash_excluding(self, x: int, exclude: frozenset[int]) -> bytes:
        """Tree hash of the subtree at ``x`` as if the leaves in ``exclude`` were never added:
        blank and absent from every unmerged_leaves list (7.9, original sibling tree hash)."""
        r = subtree_leaves(x)
        if not any(i in r for i in exclude):
            return self.node_tree_hash(x)
        if not x & 1:
            return self._leaf_hash(x >> 1, None)
        node = self._nodes[x]
        if node is not None:
            assert isinstance(node, ParentNode)
            kept = tuple(i for i in node.unmerged_leaves if i not in exclude)
            if kept != node.unmerged_leaves:
                node = replace(node, unmerged_leaves=kept)
        lh = self._tree_hash_excluding(left(x), exclude)
        rh = self._tree_hash_excluding(right(x), exclude)
        return self._parent_hash_input_hash(node, lh, rh)

    # --- parent hash (7.9) ---------------------------------------------------------------------

    def _parent_hash_of(self, p: int, sibling: int) -> bytes:
        """ParentHash of node ``p`` as seen from its child opposite ``sibling``."""
        node = self._nodes[p]
        assert isinstance(node, ParentNode)
        if node.unmerged_leaves:
            sibling_hash = self._tree_hash_excluding(sibling, frozenset(node.unmerged_leaves))
        else:
            sibling_hash = self.node_tree_hash(sibling)
        return self._hash_parent_hash_input(node.encryption_key, node.parent_hash, sibling_hash)

    def _hash_parent_hash_input(self, key: bytes, parent_hash: bytes, sibling_hash: bytes) -> bytes:
        w = Writer()
        w.opaque(key)
        w.opaque(parent_hash)
        w.opaque(sibling_hash)
        return self.cs.hash(bytes(w.buf))

    def merge_path_keys(self, sender: int, public_keys: Sequence[bytes]) -> bytes:
        """Install the public keys of an UpdatePath for leaf ``sender``; return the leaf's
        expected ``parent_hash``.

        Blanks the sender's direct path, then sets one fresh ParentNode per filtered
        direct-path node (no unmerged leaves), computing parent hashes from the root down.
        The sender's leaf itself is left as is; the caller sets it.
        """
        fdp = self.filtered_direct_path_with_copath(sender)
        if len(public_keys) != len(fdp):
            raise ValidationError(
                f"update path has {len(public_keys)} nodes, filtered direct path has {len(fdp)}"
            )
        self.blank_direct_path(sender)
        parent_hash = b""
        for (p, copath_child), key in zip(reversed(fdp), reversed(public_keys), strict=True):
            self.set_node(p, ParentNode(key, parent_hash, ()))
            # The copath child lies off the path, so its tree hash is already final.
            parent_hash = self._hash_parent_hash_input(
                key, parent_hash, self.node_tree_hash(copath_child)
            )
        return parent_hash

    def merge_update_path(self, sender: int, path: UpdatePath) -> None:
        """Receiver side of 7.5 / 12.4.2: merge ``path`` from ``sender`` and check that the new
        leaf's parent_hash matches the path (the leaf's signature is the caller's check)."""
        if self.leaf(sender) is None:
            raise ValidationError(f"update path from blank leaf {sender}")
        leaf = path.leaf_node
        if leaf.leaf_node_source != LeafNodeSource.COMMIT:
            raise ValidationError("update path leaf node must have source commit")
        keys = [n.encryption_key for n in path.nodes]
        expected = self.merge_path_keys(sender, keys)
        if leaf.parent_hash != expected:
            raise ValidationError("update path leaf parent_hash does not match the path")
        self.set_leaf(sender, leaf)
        # Fresh keys only: a key reused from elsewhere in the tree would hand the path
        # secrets to that node's holder (7.3 asks the same of leaf encryption keys).
        keys.append(leaf.encryption_key)
        own = {2 * sender, *self.filtered_direct_path(sender)}
        elsewhere = {
            node.encryption_key
            for x, node in enumerate(self._nodes)
            if node is not None and x not in own
        }
        if len(set(keys)) != len(keys) or not elsewhere.isdisjoint(keys):
            raise ValidationError("update path reuses an encryption key")

    def verify_parent_hashes(self) -> None:
        """7.9.2: every non-blank parent node must be parent-hash valid, i.e. the end of a chain
        of parent-hash links that starts at a leaf. Raises ``ValidationError``."""
        nodes = self._nodes
        root = self.root
        covered: set[int] = set()
        for d, node in enumerate(nodes):
            if node is None or d == root:
                continue
            # Leaves sit at even indices, parents at odd ones.
            if isinstance(node, LeafNode) and node.leaf_node_source != LeafNodeSource.COMMIT:
                continue  # only commit-source leaves carry a parent hash
            link = node.parent_hash
            # D links to its first non-blank ancestor P, and only if D is what P's child C
            # resolves to once P's unmerged leaves are set aside.
            c = d
            while c != root:
                p = _parent(c)
                pnode = nodes[p]
                if pnode is None:
                    c = p
                    continue
                if self._links_to(d, c, p, pnode) and (
                    link == self._parent_hash_of(p, right(p) if c < p else left(p))
                ):
                    covered.add(p)
                break
        for x in range(1, len(nodes), 2):
            if nodes[x] is not None and x not in covered:
                raise ValidationError(f"parent node {x} is not parent-hash valid")

    def _links_to(self, d: int, c: int, p: int, pnode: TreeNode) -> bool:
        res = self.resolution(c)
        if d not in res:
            return False
        sub = subtree_leaves(c)
        unmerged = {2 * i for i in pnode.unmerged_leaves if i in sub}  # type: ignore[union-attr]
        return set(res) - {d} == unmerged

    def is_parent_hash_valid(self) -> bool:
        try:
            self.verify_parent_hashes()
        except ValidationError:
            return False
        return True

    # --- structural validity (7.3, 12.4.3.1) --------------------------------------------------

    def verify_unmerged_leaves(self) -> None:
        """Each unmerged leaf of P is a non-blank leaf below P, and is also unmerged at every
        non-blank parent between it and P."""
        nodes = self._nodes
        for x in range(1, len(nodes), 2):
            node = nodes[x]
            if node is None:
                continue
            sub = subtree_leaves(x)
            for i in node.unmerged_leaves:  # type: ignore[union-attr]
                if i not in sub or nodes[2 * i] is None:
                    raise ValidationError(f"node {x} lists invalid unmerged leaf {i}")
                y = _parent(2 * i)
                while y != x:
                    mid = nodes[y]
                    if mid is not None and i not in mid.unmerged_leaves:  # type: ignore[union-attr]
                        raise ValidationError(f"leaf {i} unmerged at {x} but not at {y}")
                    y = _parent(y)

    def _build_key_index(self) -> tuple[dict[bytes, int], dict[bytes, int]]:
        if self._key_index is None:
            enc: dict[bytes, int] = {}
            sig: dict[bytes, int] = {}
            for x, node in enumerate(self._nodes):
                if node is None:
                    continue
                enc.setdefault(node.encryption_key, x)
                if not x & 1:
                    sig.setdefault(node.signature_key, x >> 1)  # type: ignore[union-attr]
            self._key_index = (enc, sig)
        return self._key_index

    def find_encryption_key(self, key: bytes) -> int | None:
        """Node index (leaf or parent) holding ``key`` as encryption key, if any."""
        return self._build_key_index()[0].get(key)

    def find_signature_key(self, key: bytes) -> int | None:
        """Leaf index whose leaf node has ``key`` as signature key, if any."""
        return self._build_key_index()[1].get(key)

    def find_leaf(self, leaf: LeafNode) -> int | None:
        for i, candidate in self.leaves():
            if candidate == leaf:
                return i
        return None

    def verify_unique_keys(self) -> None:
        """7.3: encryption keys are unique across the tree; signature keys across leaves."""
        enc: set[bytes] = set()
        sig: set[bytes] = set()
        for x, node in enumerate(self._nodes):
            if node is None:
                continue
            if node.encryption_key in enc:
                raise ValidationError(f"duplicate encryption key at node {x}")
            enc.add(node.encryption_key)
            if not x & 1:
                sk = node.signature_key  # type: ignore[union-attr]
                if sk in sig:
                    raise ValidationError(f"duplicate signature key at leaf {x >> 1}")
                sig.add(sk)

    def verify_leaf_signatures(self, group_id: bytes) -> None:
        """Every leaf node's signature verifies (LeafNodeTBS binds group id and index for
        update/commit sources)."""
        for i, leaf in self.leaves():
            if not self.cs.verify_with_label(
                leaf.signature_key, _LEAF_NODE_TBS, leaf.tbs(group_id, i), leaf.signature
            ):
                raise ValidationError(f"leaf {i} has an invalid signature")

    def verify(self, group_id: bytes | None = None) -> None:
        """The structural checks a joiner or observer runs on a received tree: unmerged leaves,
        key uniqueness, parent hashes, and (with ``group_id``) leaf signatures. Leaf content
        policy (capabilities, lifetime, credentials) is the group layer's job."""
        self.verify_unmerged_leaves()
        self.verify_unique_keys()
        self.verify_parent_hashes()
        if group_id is not None:
            self.verify_leaf_signatures(group_id)
