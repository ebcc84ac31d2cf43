"""``GroupObserver.stage`` / ``merge``: a commit verified into a ``StagedCommit`` (resolved
proposals, roster change with credentials, next GroupContext) that changes nothing until it
is merged, and ``apply`` still being stage + merge."""

from __future__ import annotations

from typing import Any

import pytest

from roost.mls.constants import ProposalType, SenderType
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import CryptoError, MLSError, ValidationError
from roost.mls.framing import MLSMessage
from roost.mls.group import Group, GroupObserver, LeafChange, StagedCommit
from roost.mls.key_package_gen import KeyPackageBundle, generate_key_package

CS = get_cipher_suite(1)


def _identity(name: bytes) -> tuple[Credential, bytes]:
    priv, _ = CS.generate_signature_key_pair()
    return Credential.basic(name), priv


def _key_package(name: bytes) -> KeyPackageBundle:
    cred, priv = _identity(name)
    return generate_key_package(1, cred, priv)


def _leaf_of(group: Group, index: int) -> tuple[Credential, bytes]:
    leaf = group.tree.leaf(index)
    assert leaf is not None
    return leaf.credential, leaf.signature_key


def _three_members(**observer_kwargs: Any) -> tuple[Group, Group, Group, GroupObserver]:
    """alice (leaf 0), bob (1), carol (2), and an observer following them."""
    cred, priv = _identity(b"alice")
    alice = Group.create(1, cred, priv)
    bob_kp, carol_kp = _key_package(b"bob"), _key_package(b"carol")
    out = alice.commit(add=[bob_kp.key_package, carol_kp.key_package])
    alice.merge_pending_commit()
    bob = Group.join_from_welcome(out.welcome, bob_kp)
    carol = Group.join_from_welcome(out.welcome, carol_kp)
    observer = GroupObserver.from_group_info(out.group_info, **observer_kwargs)
    return alice, bob, carol, observer


def test_stage_reports_added_leaves_and_the_next_epoch_without_changing_anything() -> None:
    alice, _, _, observer = _three_members()
    before = observer.to_bytes()
    dave, erin = _key_package(b"dave"), _key_package(b"erin")
    out = alice.commit(add=[dave.key_package, erin.key_package])

    staged = observer.stage(out.commit, out.group_info)

    assert isinstance(staged, StagedCommit)
    assert observer.to_bytes() == before
    assert staged.sender.sender_type == SenderType.MEMBER and staged.sender.index == 0
    assert [q.proposal.proposal_type for q in staged.proposals] == [ProposalType.ADD] * 2
    assert all(q.sender_index == 0 and q.ref is None for q in staged.proposals)  # by value
    assert staged.roster.added == (
        LeafChange(3, Credential.basic(b"dave"), dave.key_package.leaf_node.signature_key),
        LeafChange(4, Credential.basic(b"erin"), erin.key_package.leaf_node.signature_key),
    )
    assert staged.roster.removed == () and staged.roster.updated == ()
    alice.merge_pending_commit()
    assert staged.epoch == 2 == alice.epoch
    assert staged.group_context == alice.group_context

    observer.merge(staged)
    assert observer.epoch == 2
    assert observer.group_context == alice.group_context
    assert observer.tree.to_bytes() == alice.tree.to_bytes()
    assert observer.confirmation_tag == staged.confirmation_tag


def test_stage_resolves_references_and_reports_removed_and_updated_leaves() -> None:
    alice, bob, _, observer = _three_members()
    alice_cred, alice_key = _leaf_of(alice, 0)
    bob_cred, bob_key = _leaf_of(alice, 1)
    carol_cred, carol_key = _leaf_of(alice, 2)
    update = bob.propose_update(credential=Credential.basic(b"bob, renamed"))
    ref = observer.apply(update).proposal_ref
    alice.process(update)
    assert [q.ref for q in observer.pending_proposals()] == [ref]

    out = alice.commit(remove=[2])  # Remove by value, bob's Update by reference, a path
    before = observer.to_bytes()
    staged = observer.stage(out.commit)

    assert observer.to_bytes() == before
    assert [(q.proposal.proposal_type, q.sender_index, q.ref) for q in staged.proposals] == [
        (ProposalType.REMOVE, 0, None),
        (ProposalType.UPDATE, 1, ref),
    ]
    assert staged.roster.added == ()
    assert staged.roster.removed == (LeafChange(2, carol_cred, carol_key, carol_cred),)
    assert staged.roster.updated == (
        LeafChange(1, Credential.basic(b"bob, renamed"), bob_key, bob_cred),
        LeafChange(0, alice_cred, alice_key, alice_cred),  # the committer's UpdatePath leaf
    )
    alice.merge_pending_commit()
    assert staged.group_context == alice.group_context

    observer.merge(staged)
    assert observer.group_context == alice.group_context
    assert observer.pending_proposals() == ()
    assert [i for i, _, _ in observer.roster()] == [0, 1]


def test_an_external_joiner_is_an_added_leaf() -> None:
    alice, _, _, observer = _three_members()
    cred, priv = _identity(b"frank")
    frank, commit = Group.join_external(alice.group_info(), None, cred, priv, remove_prior=2)
    carol_cred, carol_key = _leaf_of(alice, 2)

    staged = observer.stage(commit)

    assert staged.sender.sender_type == SenderType.NEW_MEMBER_COMMIT
    kinds = [q.proposal.proposal_type for q in staged.proposals]
    assert kinds == [ProposalType.EXTERNAL_INIT, ProposalType.REMOVE]
    joiner = frank.tree.leaf(frank.leaf_index)
    assert joiner is not None
    assert staged.roster.added == (LeafChange(frank.leaf_index, cred, joiner.signature_key),)
    assert staged.roster.removed == (LeafChange(2, carol_cred, carol_key, carol_cred),)
    assert staged.roster.updated == ()
    assert staged.group_context == frank.group_context

    # apply reports what it always did: Add proposals only, not the joiner's own leaf.
    observed = GroupObserver.from_bytes(observer.to_bytes()).apply(commit)
    assert (observed.kind, observed.added, observed.removed) == ("commit", (), (2,))


def test_a_failed_stage_leaves_the_observer_unchanged() -> None:
    alice, bob, _, observer = _three_members()
    proposal = bob.propose_update()
    out = alice.commit(force_path=True)
    before = observer.to_bytes()
    forged = bytearray(out.commit)
    forged[-100] ^= 1  # inside the signature (the two 33-byte tags follow it)

    with pytest.raises(CryptoError):
        observer.stage(bytes(forged))
    with pytest.raises(ValidationError, match="proposals go through apply"):
        observer.stage(proposal)
    old_group_info = alice.group_info()  # this epoch's, not the next one's
    with pytest.raises(ValidationError, match="GroupContext"):
        observer.stage(out.commit, old_group_info)
    assert observer.to_bytes() == before
    assert observer.pending_proposals() == ()  # stage never caches a proposal


def test_stage_checks_the_companion_group_info_against_the_next_epoch() -> None:
    alice, bob, _, observer = _three_members()
    out = alice.commit(force_path=True)
    other = bob.commit(force_path=True)  # a rival commit of the same epoch
    before = observer.to_bytes()
    with pytest.raises(ValidationError, match="GroupInfo"):
        observer.stage(out.commit, other.group_info)
    assert observer.to_bytes() == before

    observer.merge(observer.stage(out.commit, out.group_info))
    alice.merge_pending_commit()
    assert observer.group_context == alice.group_context
    observer.check_group_info(out.group_info)


def test_merge_refuses_a_commit_staged_from_another_epoch_or_group() -> None:
    alice, _, _, observer = _three_members()
    out = alice.commit(force_path=True)
    staged = observer.stage(out.commit)

    # Another copy of the same epoch (the DS reloads its observer per request) may merge it.
    copy = GroupObserver.from_bytes(observer.to_bytes())
    copy.merge(staged)
    assert copy.epoch == alice.epoch + 1

    observer.apply(out.commit)
    advanced = observer.to_bytes()
    with pytest.raises(ValidationError, match="staged from another state"):
        observer.merge(staged)  # stale: the observer has moved on
    assert observer.to_bytes() == advanced

    stranger, *_ = _three_members()
    stranger_obs = GroupObserver.from_group_info(stranger.group_info())
    stranger_state = stranger_obs.to_bytes()
    with pytest.raises(ValidationError, match="staged from another state"):
        stranger_obs.merge(staged)  # same epoch number, another group
    assert stranger_obs.to_bytes() == stranger_state


def test_apply_is_stage_then_merge() -> None:
    alice, bob, _, observer = _three_members()
    twin = GroupObserver.from_bytes(observer.to_bytes())
    proposal = bob.propose_remove(2)
    observer.apply(proposal)
    twin.apply(proposal)
    alice.process(proposal)
    out = alice.commit(add=[_key_package(b"dave").key_package])

    observed = observer.apply(out.commit, out.group_info)
    twin.merge(twin.stage(out.commit, out.group_info))

    assert twin.to_bytes() == observer.to_bytes()
    assert (observed.kind, observed.epoch, observed.added, observed.removed) == (
        "commit",
        2,
        (2,),  # dave takes the leaf carol's Remove blanked
        (2,),
    )


class PolicyStoreDown(Exception):
    """An application failure inside a credential policy (not the peer's fault)."""


def test_a_credential_policy_error_propagates_unchanged() -> None:
    failure = PolicyStoreDown("AS certificate store unavailable")

    def policy(credential: Credential, signature_key: bytes) -> bool:
        if credential.identity == b"dave":
            raise failure
        return True

    alice, _, _, observer = _three_members(credential_policy=policy)
    out = alice.commit(add=[_key_package(b"dave").key_package])
    before = observer.to_bytes()
    for attempt in (observer.stage, observer.apply):
        with pytest.raises(PolicyStoreDown) as raised:
            attempt(out.commit)
        assert raised.value is failure
        assert observer.to_bytes() == before


def test_a_credential_policy_still_refuses_leaves() -> None:
    def policy(credential: Credential, signature_key: bytes) -> bool:
        if credential.identity == b"mallory":
            raise ValidationError("mallory is banned")
        return credential.identity != b"eve"

    alice, _, _, observer = _three_members(credential_policy=policy)
    before = observer.to_bytes()
    for name, message in ((b"mallory", "banned"), (b"eve", "rejected by policy")):
        out = alice.commit(add=[_key_package(name).key_package])
        alice.clear_pending_commit()
        with pytest.raises(ValidationError, match=message):
            observer.stage(out.commit)
        assert observer.to_bytes() == before

    # Without a policy the caller judges the staged roster itself (what the DS does).
    free = GroupObserver.from_bytes(before)
    out = alice.commit(add=[_key_package(b"eve").key_package])
    staged = free.stage(out.commit)
    judged = staged.roster.added + staged.roster.updated
    assert [c.credential.identity for c in judged] == [b"eve"]


def test_stage_accepts_an_mls_message_object_and_rejects_application_data() -> None:
    alice, bob, _, observer = _three_members()
    out = alice.commit(force_path=True)
    staged = observer.stage(MLSMessage.decode(out.commit))
    assert staged.epoch == observer.epoch + 1
    with pytest.raises(MLSError):
        observer.stage(bob.encrypt(b"hello"))
