"""Mutated handshake messages never crash the observer or a member: they raise MLSError
(DecodeError / ValidationError / CryptoError) and leave the state unchanged."""

from __future__ import annotations

import contextlib
import random

import pytest

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import MLSError
from roost.mls.group import Group
from roost.mls.group.observer import GroupObserver
from roost.mls.key_package_gen import generate_key_package

CS = get_cipher_suite(1)


def _setup():
    priv, _ = CS.generate_signature_key_pair()
    alice = Group.create(1, Credential.basic(b"alice"), priv)
    kps = []
    for name in (b"bob", b"carol"):
        p, _ = CS.generate_signature_key_pair()
        kps.append(generate_key_package(1, Credential.basic(name), p))
    out = alice.commit(add=[k.key_package for k in kps])
    alice.merge_pending_commit()
    bob = Group.join_from_welcome(out.welcome, kps[0])
    observer = GroupObserver.from_group_info(out.group_info)
    return alice, bob, observer


def _mutants(data: bytes, rng: random.Random, n: int):
    for _ in range(n):
        b = bytearray(data)
        kind = rng.randrange(3)
        if kind == 0:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            b = b[: rng.randrange(len(b))]
        else:
            i = rng.randrange(len(b))
            b[i:i] = bytes([rng.randrange(256)])
        yield bytes(b)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_commits_and_proposals(seed):
    rng = random.Random(seed)
    alice, bob, observer = _setup()
    proposal = bob.propose_update()
    commit_out = alice.commit(force_path=True, remove=[2])
    obs_before = observer.to_bytes()
    bob_epoch, bob_auth = bob.epoch, bob.epoch_authenticator
    for msg in (proposal, commit_out.commit):
        for mutant in _mutants(msg, rng, 150):
            if mutant == msg:
                continue
            try:
                observer.apply(mutant)
            except MLSError:
                # Rejected: nothing changed.
                assert observer.to_bytes() == obs_before
            else:
                # Only bits the observer cannot check (the membership tag) may differ.
                observer = GroupObserver.from_bytes(obs_before)
            with contextlib.suppress(MLSError):
                bob.process(mutant)
            assert (bob.epoch, bob.epoch_authenticator) == (bob_epoch, bob_auth)
    # The genuine messages still work.
    assert observer.apply(proposal).kind == "proposal"
    assert alice.process(proposal).kind == "proposal"


@pytest.mark.parametrize("seed", range(2))
def test_mutated_group_info_and_state(seed):
    rng = random.Random(seed)
    alice, _bob, _observer = _setup()
    gi = alice.group_info()
    for mutant in _mutants(gi, rng, 150):
        if mutant == gi:
            continue
        with pytest.raises(MLSError):
            GroupObserver.from_group_info(mutant)
    state = alice.to_bytes()
    for mutant in _mutants(state, rng, 150):
        with contextlib.suppress(MLSError):
            Group.from_bytes(mutant)


def test_a_path_node_with_the_wrong_number_of_ciphertexts_is_refused_by_the_observer():
    """Each UpdatePath node carries one ciphertext per node in its copath resolution
    (12.4.2). A member decrypts only one node, so a committer could send a path that some
    members refuse while the others and the server accept it (the group forks); the observer
    now checks every node. Found by the differential fuzz test (observer vs member)."""
    import dataclasses

    from roost.mls.constants import WireFormat
    from roost.mls.errors import ValidationError
    from roost.mls.framing import (
        AuthenticatedContent,
        MLSMessage,
        PublicMessage,
        framed_content_tbs,
    )

    priv, _ = CS.generate_signature_key_pair()
    alice = Group.create(1, Credential.basic(b"alice"), priv)
    kps = []
    for name in (b"bob", b"carol", b"dave"):
        p, _ = CS.generate_signature_key_pair()
        kps.append(generate_key_package(1, Credential.basic(name), p))
    out = alice.commit(add=[k.key_package for k in kps])
    alice.merge_pending_commit()
    observer = GroupObserver.from_group_info(out.group_info)
    before = observer.to_bytes()
    membership_key = alice._epoch.secrets.membership_key  # noqa: SLF001 - to pass the tag
    ctx = observer.public_state.context_bytes
    pm = MLSMessage.decode(alice.commit(force_path=True).commit).body
    alice.clear_pending_commit()
    commit = pm.content.content
    top = commit.path.nodes[-1]  # its copath (carol and dave's subtree) resolves to 2 nodes
    assert len(top.encrypted_path_secret) == 2

    def resigned(nodes) -> bytes:
        path = dataclasses.replace(commit.path, nodes=nodes)
        content = dataclasses.replace(pm.content, content=dataclasses.replace(commit, path=path))
        tbs = framed_content_tbs(WireFormat.PUBLIC_MESSAGE, content, ctx)
        auth = dataclasses.replace(
            pm.auth, signature=CS.sign_with_label(priv, b"FramedContentTBS", tbs)
        )
        ac = AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, content, auth)
        tag = CS.mac(membership_key, ac.tbm(ctx))
        return MLSMessage(PublicMessage(content, auth, tag)).encode()

    for wrong in (top.encrypted_path_secret[:1], top.encrypted_path_secret * 2):
        nodes = [*commit.path.nodes[:-1], dataclasses.replace(top, encrypted_path_secret=wrong)]
        with pytest.raises(ValidationError, match="wrong number of ciphertexts"):
            observer.apply(resigned(nodes))
        assert observer.to_bytes() == before
    assert observer.apply(resigned(list(commit.path.nodes))).kind == "commit"  # re-signed as is
