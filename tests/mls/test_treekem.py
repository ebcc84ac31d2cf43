"""Official treekem vectors: every leaf's private view, decap of every update path by every
other member (path secret at the common ancestor, commit secret, tree hash after), and a fresh
encap from each sender that every other member must be able to decap."""

from __future__ import annotations

import pytest

from roost.mls.crypto import get_cipher_suite
from roost.mls.group_context import GroupContext
from roost.mls.ratchet_tree import RatchetTree
from roost.mls.treekem import TreePrivateState, commit_leaf_node, decap, encap
from roost.mls.update_path import UpdatePath

from .vectors import cases, h


def _private_states(cs, tree: RatchetTree, case: dict) -> tuple[dict, dict]:
    states: dict[int, TreePrivateState] = {}
    sig_privs: dict[int, bytes] = {}
    for info in case["leaves_private"]:
        index = info["index"]
        leaf = tree.leaf(index)
        assert leaf is not None
        state = TreePrivateState.for_leaf(cs, index, h(info["encryption_priv"]))
        assert state.keys[2 * index][1] == leaf.encryption_key
        assert cs.signature_public_key(h(info["signature_priv"])) == leaf.signature_key
        for entry in info["path_secrets"]:
            state.set_path_secret(cs, entry["node"], h(entry["path_secret"]))
        assert state.is_consistent(tree), f"private state of leaf {index}"
        states[index] = state
        sig_privs[index] = h(info["signature_priv"])
    return states, sig_privs


@pytest.mark.parametrize("case", cases("treekem"))
def test_treekem(case: dict) -> None:
    cs = get_cipher_suite(case["cipher_suite"])
    group_id = h(case["group_id"])
    tree = RatchetTree.from_bytes(cs, h(case["ratchet_tree"]))
    assert tree.to_bytes() == h(case["ratchet_tree"])
    tree.verify(group_id)
    states, sig_privs = _private_states(cs, tree, case)
    members = [i for i, _ in tree.leaves()]
    assert sorted(states) == members

    def context(tree_hash: bytes) -> bytes:
        return GroupContext(
            1,
            cs.suite_id,
            group_id,
            case["epoch"],
            tree_hash,
            h(case["confirmed_transcript_hash"]),
        ).encode()

    for info in case["update_paths"]:
        sender = info["sender"]
        path = UpdatePath.decode(h(info["update_path"]))
        leaf = path.leaf_node
        assert cs.verify_with_label(
            leaf.signature_key, b"LeafNodeTBS", leaf.tbs(group_id, sender), leaf.signature
        )

        after = tree.copy()
        after.merge_update_path(sender, path)
        after.verify_parent_hashes()
        assert after.tree_hash() == h(info["tree_hash_after"])
        ctx = context(after.tree_hash())

        assert len(info["path_secrets"]) == tree.leaf_count
        for to in range(tree.leaf_count):
            want = info["path_secrets"][to]
            if to == sender or tree.leaf(to) is None:
                assert want is None
                continue
            result = decap(cs, after, states[to], sender, path, ctx)
            assert result.commit_secret == h(info["commit_secret"])
            assert result.path_secret == h(want)
            assert result.private_state.is_consistent(after)

        # A fresh path from the same sender: every other member decaps the same secret, and
        # merging the path on the receiver side yields the committer's tree.
        committer_tree = tree.copy()
        old_leaf = tree.leaf(sender)
        assert old_leaf is not None
        enc = encap(
            cs,
            committer_tree,
            sender,
            lambda key, ph, old=old_leaf, s=sender: commit_leaf_node(
                cs, old, key, ph, sig_privs[s], group_id, s
            ),
            context,
        )
        committer_tree.verify(group_id)
        assert enc.private_state.is_consistent(committer_tree)
        receiver_tree = tree.copy()
        receiver_tree.merge_update_path(sender, UpdatePath.decode(enc.update_path.encode()))
        assert receiver_tree == committer_tree
        assert receiver_tree.tree_hash() == committer_tree.tree_hash()
        fresh_ctx = context(receiver_tree.tree_hash())
        for to in members:
            if to == sender:
                continue
            result = decap(cs, receiver_tree, states[to], sender, enc.update_path, fresh_ctx)
            assert result.commit_secret == enc.commit_secret
