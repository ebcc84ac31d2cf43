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


# --- simulated groups: commits with adds, removes and updates, for every supported suite ---


def _new_member(cs, name: str):
    from dataclasses import replace

    from roost.mls.constants import LeafNodeSource
    from roost.mls.credential import Credential
    from roost.mls.leaf_node import Capabilities, LeafNode, Lifetime

    sig_priv, sig_pub = cs.generate_signature_key_pair()
    enc_priv, enc_pub = cs.generate_hpke_key_pair()
    leaf = LeafNode(
        enc_pub,
        sig_pub,
        Credential.basic(name.encode()),
        Capabilities(cipher_suites=(cs.suite_id,)),
        LeafNodeSource.KEY_PACKAGE,
        Lifetime(0, 2**64 - 1),
    )
    leaf = replace(leaf, signature=cs.sign_with_label(sig_priv, b"LeafNodeTBS", leaf.tbs()))
    return leaf, enc_priv, sig_priv


class _Group:
    """Every member's private state over one shared public tree."""

    def __init__(self, cs, size: int) -> None:
        self.cs = cs
        self.group_id = b"sim"
        self.epoch = 0
        leaf, enc_priv, sig_priv = _new_member(cs, "m0")
        self.tree = RatchetTree.one_member(cs, leaf)
        self.sig = {0: sig_priv}
        self.state = {0: TreePrivateState.for_leaf(cs, 0, enc_priv)}
        self.commit([f"m{i}" for i in range(1, size)], [], committer=0)

    def context(self, tree_hash: bytes) -> bytes:
        return GroupContext(1, self.cs.suite_id, self.group_id, self.epoch, tree_hash, b"").encode()

    def commit(self, adds: list[str], removes: list[int], committer: int) -> bytes:
        cs = self.cs
        staged = self.tree.copy()
        for r in removes:
            staged.remove_leaf(r)
        joiners = {}
        for name in adds:
            leaf, enc_priv, sig_priv = _new_member(cs, name)
            index = staged.add_leaf(leaf)
            joiners[index] = (enc_priv, sig_priv)
        receivers_tree = staged.copy()
        old = staged.leaf(committer)
        enc = encap(
            cs,
            staged,
            committer,
            lambda key, ph: commit_leaf_node(
                cs, old, key, ph, self.sig[committer], self.group_id, committer
            ),
            self.context,
            excluded_leaves=sorted(joiners),
        )
        path = UpdatePath.decode(enc.update_path.encode())
        for k, n in zip(enc.prepared.path, path.nodes, strict=True):
            want = len(staged.resolution(k[1], sorted(joiners)))
            assert len(n.encrypted_path_secret) == want
        receivers_tree.merge_update_path(committer, path)
        assert receivers_tree == staged
        receivers_tree.verify(self.group_id)
        ctx = self.context(receivers_tree.tree_hash())
        new_state = {committer: enc.private_state}
        for member, state in self.state.items():
            if member == committer or member in removes:
                continue
            result = decap(cs, receivers_tree, state, committer, path, ctx, sorted(joiners))
            assert result.commit_secret == enc.commit_secret
            new_state[member] = result.private_state
        for r in removes:
            del self.sig[r]
        for index, (enc_priv, sig_priv) in joiners.items():
            joiner = TreePrivateState.for_leaf(cs, index, enc_priv)
            secret = enc.prepared.path_secret_for(index)
            assert secret is not None  # every joiner's common ancestor is on the path
            joiner.add_joiner_path(cs, receivers_tree, committer, secret[1])
            # The joiner reaches the root secret the members derived.
            root_node = receivers_tree.root
            assert joiner.path_secrets[root_node] == enc.private_state.path_secrets[root_node]
            new_state[index] = joiner
            self.sig[index] = sig_priv
        for member, state in new_state.items():
            assert state.is_consistent(receivers_tree), member
        self.tree, self.state = receivers_tree, new_state
        self.epoch += 1
        return enc.commit_secret


@pytest.mark.parametrize("suite", [1, 2, 3, 5])
def test_simulated_group_commits(suite: int) -> None:
    import random

    cs = get_cipher_suite(suite)
    rng = random.Random(suite)
    group = _Group(cs, 5)
    for step in range(6):
        members = sorted(group.state)
        committer = rng.choice(members)
        others = [m for m in members if m != committer]
        removes = rng.sample(others, k=min(len(others) - 1, rng.randint(0, 2)))
        adds = [f"s{step}-{i}" for i in range(rng.randint(0, 3))]
        group.commit(adds, removes, committer)


def test_add_only_commit_leaves_unmerged_leaves_that_later_paths_cover() -> None:
    cs = get_cipher_suite(1)
    group = _Group(cs, 3)  # leaf 3 blank, so the add does not double the tree
    # An add without a path: the newcomer becomes an unmerged leaf of the non-blank ancestors.
    leaf, enc_priv, sig_priv = _new_member(cs, "quiet")
    index = group.tree.add_leaf(leaf)
    group.tree.verify(group.group_id)
    unmerged_at = [p for p in group.tree.direct_path(2 * index) if group.tree.node(p) is not None]
    assert unmerged_at and all(
        index in group.tree.parent_node(p).unmerged_leaves for p in unmerged_at
    )
    group.state[index] = TreePrivateState.for_leaf(cs, index, enc_priv)
    group.sig[index] = sig_priv
    # A commit by someone else must reach the newcomer through its own leaf key.
    committer = 0 if index != 0 else 1
    group.commit([], [], committer)
    assert all(
        not group.tree.parent_node(p).unmerged_leaves
        for p in group.tree.direct_path(2 * committer)
        if group.tree.node(p) is not None
    )


def test_decap_rejects_tampered_paths() -> None:
    from dataclasses import replace

    from roost.mls.errors import CryptoError, ValidationError

    cs = get_cipher_suite(1)
    group = _Group(cs, 4)
    staged = group.tree.copy()
    old = staged.leaf(0)
    enc = encap(
        cs,
        staged,
        0,
        lambda key, ph: commit_leaf_node(cs, old, key, ph, group.sig[0], group.group_id, 0),
        group.context,
    )
    ctx = group.context(staged.tree_hash())
    path = enc.update_path
    # Wrong context (e.g. a different tree hash): the HPKE open fails.
    with pytest.raises(CryptoError):
        decap(cs, staged, group.state[1], 0, path, group.context(b"\x00" * 32))
    # A swapped public key for the root: decryption works, the derived key does not match.
    fake_root = replace(path.nodes[-1], encryption_key=cs.generate_hpke_key_pair()[1])
    bad = replace(path, nodes=(*path.nodes[:-1], fake_root))
    with pytest.raises(ValidationError):
        decap(cs, staged, group.state[1], 0, bad, ctx)
    # Too few nodes, or too few ciphertexts for the receiver's copath node.
    with pytest.raises(ValidationError):
        decap(cs, staged, group.state[1], 0, replace(path, nodes=path.nodes[:-1]), ctx)
    thin = replace(path.nodes[0], encrypted_path_secret=())
    with pytest.raises(ValidationError):
        decap(cs, staged, group.state[1], 0, replace(path, nodes=(thin, *path.nodes[1:])), ctx)
    # Nobody decaps their own path; the receiver still decaps the genuine one.
    with pytest.raises(ValidationError):
        decap(cs, staged, group.state[0], 0, path, ctx)
    assert decap(cs, staged, group.state[3], 0, path, ctx).commit_secret == enc.commit_secret
