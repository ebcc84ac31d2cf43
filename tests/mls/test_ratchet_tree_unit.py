"""RatchetTree unit tests: shape changes, encoding rules, caching and copies, validation."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from roost.mls import tree_math
from roost.mls.codec import Writer
from roost.mls.constants import LeafNodeSource
from roost.mls.credential import Credential
from roost.mls.crypto import get_cipher_suite
from roost.mls.errors import DecodeError, ValidationError
from roost.mls.leaf_node import Capabilities, LeafNode, Lifetime
from roost.mls.ratchet_tree import RatchetTree, subtree_leaves
from roost.mls.tree_nodes import Node, ParentNode
from roost.mls.treekem import commit_leaf_node, prepare_path
from roost.mls.update_path import UpdatePath, UpdatePathNode

CS = get_cipher_suite(1)
GROUP_ID = b"unit-test-group"


def new_leaf(name: str) -> tuple[LeafNode, bytes]:
    """A signed key-package leaf and its signature private key."""
    sig_priv, sig_pub = CS.generate_signature_key_pair()
    _, enc_pub = CS.generate_hpke_key_pair()
    leaf = LeafNode(
        enc_pub,
        sig_pub,
        Credential.basic(name.encode()),
        Capabilities(),
        LeafNodeSource.KEY_PACKAGE,
        Lifetime(0, 2**64 - 1),
    )
    sig = CS.sign_with_label(sig_priv, b"LeafNodeTBS", leaf.tbs())
    return replace(leaf, signature=sig), sig_priv


def tree_of(n: int) -> tuple[RatchetTree, list[bytes]]:
    leaf, sig = new_leaf("m0")
    tree = RatchetTree.one_member(CS, leaf)
    sigs = [sig]
    for i in range(1, n):
        leaf, sig = new_leaf(f"m{i}")
        assert tree.add_leaf(leaf) == i
        sigs.append(sig)
    return tree, sigs


def commit_from(tree: RatchetTree, sender: int, sig_priv: bytes) -> None:
    prepared = prepare_path(CS, tree, sender)
    old = tree.leaf(sender)
    assert old is not None
    tree.set_leaf(
        sender,
        commit_leaf_node(
            CS,
            old,
            prepared.leaf_public_key,
            prepared.leaf_parent_hash,
            sig_priv,
            GROUP_ID,
            sender,
        ),
    )


def fresh_hash(tree: RatchetTree) -> bytes:
    return RatchetTree.from_bytes(CS, tree.to_bytes()).tree_hash()


def test_add_fills_leftmost_blank_leaf_and_extends_by_doubling() -> None:
    tree, _ = tree_of(3)
    assert (tree.leaf_count, tree.node_width, tree.root) == (4, 7, 3)
    tree.remove_leaf(1)
    assert tree.leaf(1) is None and tree.leaf_count == 4
    leaf, _ = new_leaf("x")
    assert tree.add_leaf(leaf) == 1
    assert tree.add_leaf(new_leaf("y")[0]) == 3
    assert tree.add_leaf(new_leaf("z")[0]) == 4
    assert (tree.leaf_count, tree.node_width, tree.root) == (8, 15, 7)
    assert tree.member_count() == 5


def test_add_marks_unmerged_on_non_blank_ancestors_only() -> None:
    tree, sigs = tree_of(4)
    tree.remove_leaf(3)
    commit_from(tree, 0, sigs[0])
    # Leaf 0's filtered direct path is node 1 and the root 3; node 5 stays blank.
    assert tree.node(1) is not None and tree.node(3) is not None and tree.node(5) is None
    assert tree.add_leaf(new_leaf("late")[0]) == 3
    assert tree.parent_node(3).unmerged_leaves == (3,)  # type: ignore[union-attr]
    assert tree.node(5) is None
    assert tree.resolution(5) == [4, 6]
    assert tree.resolution(3) == [3, 6]
    assert tree.resolution(3, exclude=[3]) == [3]
    tree.verify(GROUP_ID)


def test_update_blanks_direct_path_and_remove_truncates() -> None:
    tree, sigs = tree_of(4)
    commit_from(tree, 0, sigs[0])
    assert all(tree.node(x) is not None for x in (1, 3))
    tree.update_leaf(2, replace(tree.leaf(2), signature=b"x"))  # type: ignore[type-var]
    assert tree.node(5) is None and tree.node(3) is None and tree.node(1) is not None
    tree.remove_leaf(3)
    assert tree.leaf_count == 4  # leaf 2 still lives in the right half
    tree.remove_leaf(2)
    assert tree.leaf_count == 2 and tree.node_width == 3
    tree.remove_leaf(1)
    assert tree.leaf_count == 1 and tree.node_width == 1
    with pytest.raises(ValidationError):
        tree.remove_leaf(1)


def test_encoding_drops_trailing_blanks_and_decoding_pads_to_a_full_tree() -> None:
    tree, _ = tree_of(3)
    data = tree.to_bytes()
    back = RatchetTree.from_bytes(CS, data)
    assert back.node_width == 7 and back == tree and back.to_bytes() == data
    # Four entries ending in a parent node need a four-leaf tree.
    leaf0, _ = new_leaf("a")
    leaf1, _ = new_leaf("b")
    _, root_key = CS.generate_hpke_key_pair()
    four = [leaf0, None, leaf1, ParentNode(root_key)]
    padded = RatchetTree.from_nodes(CS, [None if n is None else Node.of(n) for n in four])
    assert padded.node_width == 7 and padded.root == 3
    assert RatchetTree.from_bytes(CS, padded.to_bytes()) == padded


def _raw_tree(entries: list[Node | None]) -> bytes:
    w = Writer()
    w.vector(entries, lambda w2, n: w2.optional(n, lambda w3, m: m.encode_to(w3)))
    return w.getvalue()


def test_decoding_rejects_trailing_blank_wrong_positions_and_empty() -> None:
    leaf, _ = new_leaf("a")
    with pytest.raises(DecodeError):
        RatchetTree.from_bytes(CS, _raw_tree([Node.of(leaf), None]))
    with pytest.raises(DecodeError):
        RatchetTree.from_bytes(CS, _raw_tree([Node.of(leaf), Node.of(leaf)]))
    with pytest.raises(DecodeError):
        RatchetTree.from_bytes(CS, _raw_tree([Node.of(ParentNode(b"k"))]))
    with pytest.raises(DecodeError):
        RatchetTree.from_bytes(CS, _raw_tree([]))
    with pytest.raises(DecodeError):
        RatchetTree.from_nodes(CS, [Node.of(leaf), None])


def test_copy_is_independent_and_cached_hash_matches_fresh_computation() -> None:
    tree, sigs = tree_of(5)
    before = tree.tree_hash()
    encoded = tree.to_bytes()  # cached, and shared with the copy until either changes
    staged = tree.copy()
    staged.add_leaf(new_leaf("n")[0])
    commit_from(staged, 1, sigs[1])
    staged.remove_leaf(4)
    assert tree.tree_hash() == before == fresh_hash(tree)
    assert tree.to_bytes() == encoded != staged.to_bytes()
    assert RatchetTree.from_bytes(CS, staged.to_bytes()) == staged
    assert staged.tree_hash() == fresh_hash(staged) != before


def test_random_operations_keep_cache_and_parent_hashes_consistent() -> None:
    rng = random.Random(7)
    tree, sigs = tree_of(2)
    sig_by_leaf = dict(enumerate(sigs))
    for step in range(60):
        members = [i for i, _ in tree.leaves()]
        op = rng.choice(["add", "add", "remove", "commit", "commit", "update"])
        if op == "add" or len(members) < 2:
            leaf, sig = new_leaf(f"s{step}")
            sig_by_leaf[tree.add_leaf(leaf)] = sig
        elif op == "remove":
            tree.remove_leaf(rng.choice(members))
        elif op == "commit":
            commit_from(tree, (s := rng.choice(members)), sig_by_leaf[s])
        else:
            s = rng.choice(members)
            leaf = tree.leaf(s)
            assert leaf is not None
            _, enc_pub = CS.generate_hpke_key_pair()
            upd = replace(
                leaf, encryption_key=enc_pub, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None
            )
            sig = CS.sign_with_label(sig_by_leaf[s], b"LeafNodeTBS", upd.tbs(GROUP_ID, s))
            tree.update_leaf(s, replace(upd, signature=sig))
        assert tree.tree_hash() == fresh_hash(tree), f"step {step}: {op}"
        tree.verify(GROUP_ID)


def test_parent_hash_verification_detects_tampering() -> None:
    tree, sigs = tree_of(4)
    commit_from(tree, 2, sigs[2])
    tree.add_leaf(new_leaf("late")[0])  # doubles the tree; the new root is blank
    tree.verify_parent_hashes()
    node = tree.parent_node(3)
    assert node is not None

    bad_key = tree.copy()
    bad_key.set_node(3, replace(node, encryption_key=CS.generate_hpke_key_pair()[1]))
    with pytest.raises(ValidationError):
        bad_key.verify_parent_hashes()
    assert not bad_key.is_parent_hash_valid()

    # Structurally fine (leaf 0 is below node 3) but breaks the original sibling tree hash.
    bad_unmerged = tree.copy()
    bad_unmerged.set_node(3, replace(node, unmerged_leaves=(0,)))
    bad_unmerged.verify_unmerged_leaves()
    with pytest.raises(ValidationError):
        bad_unmerged.verify_parent_hashes()

    outside = tree.copy()
    outside.set_node(3, replace(node, unmerged_leaves=(4,)))
    with pytest.raises(ValidationError):
        outside.verify_unmerged_leaves()

    orphan = tree.copy()
    orphan.set_node(1, ParentNode(CS.generate_hpke_key_pair()[1]))
    with pytest.raises(ValidationError):
        orphan.verify_parent_hashes()


def test_update_path_merge_checks_length_and_leaf_parent_hash() -> None:
    tree, sigs = tree_of(4)
    with pytest.raises(ValidationError):
        tree.copy().merge_path_keys(0, [b"k"])
    staged = tree.copy()
    prepared = prepare_path(CS, staged, 0)
    leaf = tree.leaf(0)
    assert leaf is not None
    wrong = commit_leaf_node(CS, leaf, prepared.leaf_public_key, b"nope", sigs[0], GROUP_ID, 0)
    keys = [staged.encryption_key(p) for p, _ in prepared.path]
    path = UpdatePath(wrong, tuple(UpdatePathNode(k) for k in keys if k))
    with pytest.raises(ValidationError):
        tree.copy().merge_update_path(0, path)


def test_key_lookups_and_uniqueness() -> None:
    tree, _ = tree_of(3)
    leaf = tree.leaf(2)
    assert leaf is not None
    assert tree.find_signature_key(leaf.signature_key) == 2
    assert tree.find_encryption_key(leaf.encryption_key) == 4
    assert tree.find_leaf(leaf) == 2
    assert tree.find_signature_key(b"unknown") is None
    tree.verify_unique_keys()
    dup = tree.copy()
    dup.set_leaf(3, leaf)
    assert dup.find_signature_key(leaf.signature_key) == 2
    with pytest.raises(ValidationError):
        dup.verify_unique_keys()


@pytest.mark.parametrize("n_leaves", [1, 2, 4, 8, 16, 32])
def test_shape_matches_tree_math(n_leaves: int) -> None:
    leaf, _ = new_leaf("a")
    tree = RatchetTree(CS, [leaf] + [None] * (2 * n_leaves - 2))
    assert tree.root == tree_math.root(n_leaves)
    for x in range(tree.node_width):
        assert tree.direct_path(x) == tree_math.direct_path(x, n_leaves)
        assert tree.copath(x) == tree_math.copath(x, n_leaves)
        if x != tree.root:
            assert tree.parent(x) == tree_math.parent(x, n_leaves)
            assert tree.sibling(x) == tree_math.sibling(x, n_leaves)
        leaves = subtree_leaves(x)
        assert all(tree_math.is_in_subtree(x, 2 * i) for i in leaves)
        assert len(leaves) == 1 << tree_math.level(x)


def test_update_path_with_a_reused_key_is_rejected() -> None:
    tree, sigs = tree_of(4)
    staged = tree.copy()
    prepared = prepare_path(CS, staged, 0)
    leaf = tree.leaf(0)
    assert leaf is not None
    new_leaf_node = commit_leaf_node(
        CS, leaf, prepared.leaf_public_key, prepared.leaf_parent_hash, sigs[0], GROUP_ID, 0
    )
    keys = [staged.encryption_key(p) or b"" for p, _ in prepared.path]
    good = UpdatePath(new_leaf_node, tuple(UpdatePathNode(k) for k in keys))
    tree.copy().merge_update_path(0, good)
    # Same path, but the leaf reuses leaf 2's key: parent hashes still match, the key does not.
    other = tree.leaf(2)
    assert other is not None
    reused = commit_leaf_node(
        CS, leaf, other.encryption_key, prepared.leaf_parent_hash, sigs[0], GROUP_ID, 0
    )
    with pytest.raises(ValidationError):
        tree.copy().merge_update_path(0, UpdatePath(reused, good.nodes))
