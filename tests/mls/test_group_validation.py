"""RFC 9420 section 12.2 proposal-list rules, 7.3/10.1 leaf and KeyPackage validation, external
senders, and the all-or-nothing behaviour of members and the observer on bad input."""

from __future__ import annotations

from dataclasses import replace

import pytest

from roost.mls.constants import SenderType
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import CryptoError, DecodeError, MLSError, ValidationError
from roost.mls.extensions import Extension
from roost.mls.framing import MLSMessage
from roost.mls.group import Group
from roost.mls.group.external import (
    external_remove,
    external_senders_extension,
    new_member_add_proposal,
)
from roost.mls.group.observer import GroupObserver
from roost.mls.group.proposal_rules import QueuedProposal, apply_proposals, check_proposal_list
from roost.mls.key_package_gen import generate_key_package
from roost.mls.leaf_node import Lifetime
from roost.mls.proposals import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ReInit,
    Remove,
    Update,
)
from roost.mls.psk import PreSharedKeyID

CS = get_cipher_suite(1)
M = SenderType.MEMBER


def _kp(name: bytes, **kw):
    priv, _ = CS.generate_signature_key_pair()
    return generate_key_package(1, Credential.basic(name), priv, **kw)


def _group(n: int):
    """A group of n members at the creator, plus the joined members."""
    priv, _ = CS.generate_signature_key_pair()
    alice = Group.create(1, Credential.basic(b"alice"), priv)
    bundles = [_kp(b"m%d" % i) for i in range(n - 1)]
    members = [alice]
    if bundles:
        out = alice.commit(add=[b.key_package for b in bundles])
        alice.merge_pending_commit()
        members += [Group.join_from_welcome(out.welcome, b) for b in bundles]
    return members


def q(body, sender_type=M, index=0, ref=None):
    return QueuedProposal(Proposal(body), sender_type, index, ref)


def _check(props, committer_type=M, committer=0):
    check_proposal_list(
        props, committer_type=committer_type, committer_index=committer, hash_len=32
    )


def _leaf():
    return _kp(b"x").key_package.leaf_node


PSK = PreSharedKeyID.external(b"id", bytes(32))


@pytest.mark.parametrize(
    "props, match",
    [
        ([q(Remove(1)), q(Remove(1))], "more than one Update/Remove"),
        ([q(Update(_leaf()), index=1, ref=b"r"), q(Remove(1))], "more than one Update/Remove"),
        ([q(Remove(0))], "cannot remove itself"),
        ([q(Update(_leaf()), index=0, ref=b"r")], "own Update"),
        ([q(Update(_leaf()), index=1)], "by reference"),
        ([q(GroupContextExtensions(())), q(GroupContextExtensions(()))], "GroupContextExtensions"),
        ([q(ExternalInit(b"k"))], "EXTERNAL_INIT proposal not allowed"),
        ([q(PreSharedKey(PSK)), q(PreSharedKey(PSK))], "duplicate PreSharedKey"),
        ([q(ReInit(b"g", 1, 1)), q(Remove(1))], "only proposal"),
        ([q(PreSharedKey(PreSharedKeyID.external(b"id", b"short")))], "nonce length"),
        ([q(Update(_leaf()), SenderType.EXTERNAL, 0, b"r")], "not allowed"),
        ([q(Remove(1), SenderType.NEW_MEMBER_PROPOSAL, None, b"r")], "not allowed"),
    ],
)
def test_proposal_list_rules(props, match):
    with pytest.raises(ValidationError, match=match):
        _check(props)


def test_duplicate_add_signature_key():
    kp = _kp(b"x").key_package
    with pytest.raises(ValidationError, match="same signature key"):
        _check([q(Add(kp)), q(Add(kp))])


def test_external_commit_rules():
    nm = SenderType.NEW_MEMBER_COMMIT
    with pytest.raises(ValidationError, match="exactly one ExternalInit"):
        _check([q(Remove(1), nm, None)], nm, None)
    with pytest.raises(ValidationError, match="by reference"):
        _check([q(ExternalInit(b"k"), nm, None), q(Remove(1), M, 1, b"ref")], nm, None)
    with pytest.raises(ValidationError, match="not allowed"):
        _check([q(ExternalInit(b"k"), nm, None), q(Add(_kp(b"x").key_package), nm, None)], nm, None)
    _check([q(ExternalInit(b"k"), nm, None), q(Remove(1), nm, None)], nm, None)


def _apply(group: Group, props):
    ctx = group.group_context
    return apply_proposals(
        CS,
        group.tree,
        group_id=ctx.group_id,
        cipher_suite=1,
        extensions=ctx.extensions,
        proposals=props,
    )


def test_key_package_validation():
    (alice,) = _group(1)
    good = _kp(b"bob").key_package
    _apply(alice, [q(Add(good))])
    bad_sig = replace(good, signature=bytes(len(good.signature)))
    with pytest.raises(CryptoError):
        _apply(alice, [q(Add(bad_sig))])
    with pytest.raises(ValidationError, match="cipher suite"):
        _apply(alice, [q(Add(replace(good, cipher_suite=2)))])
    with pytest.raises(ValidationError, match="version"):
        _apply(alice, [q(Add(replace(good, version=7)))])
    same = replace(good, init_key=good.leaf_node.encryption_key)
    with pytest.raises(ValidationError, match="init_key"):
        _apply(alice, [q(Add(same))])
    expired = _kp(b"old", lifetime=Lifetime(0, 10)).key_package
    with pytest.raises(ValidationError, match="lifetime"):
        _apply(alice, [q(Add(expired))])


def test_add_of_existing_member_only_with_its_removal():
    alice, bob = _group(2)
    priv = bob._sig_priv
    again = generate_key_package(1, Credential.basic(b"bob"), priv).key_package
    with pytest.raises(ValidationError, match="signature key already used"):
        _apply(alice, [q(Add(again))])
    applied = _apply(alice, [q(Remove(1)), q(Add(again))])
    assert applied.removed == [1] and applied.added[0][0] == 1


def test_remove_of_blank_leaf_and_unsupported_extension():
    alice, _bob = _group(2)
    with pytest.raises(ValidationError, match="blank or missing"):
        _apply(alice, [q(Remove(5))])
    with pytest.raises(ValidationError, match="extension type 0xff00|extension type 65280"):
        _apply(alice, [q(GroupContextExtensions((Extension(0xFF00, b""),)))])


def test_server_external_remove_and_new_member_add():
    cs = CS
    server_priv, server_pub = cs.generate_signature_key_pair()
    ext = external_senders_extension([(server_pub, Credential.basic(b"server"))])
    priv, _ = cs.generate_signature_key_pair()
    alice = Group.create(1, Credential.basic(b"alice"), priv, extensions=[ext])
    bob_kp = _kp(b"bob")
    out = alice.commit(add=[bob_kp.key_package])
    alice.merge_pending_commit()
    bob = Group.join_from_welcome(out.welcome, bob_kp)
    observer = GroupObserver.from_group_info(out.group_info)

    # The server removes Bob; Alice commits the proposal by reference.
    prop = external_remove(observer.group_context, 0, server_priv, bob.leaf_index)
    for target in (alice, observer):
        target.apply(prop) if target is observer else target.process(prop)
    bob.process(prop)
    out = alice.commit()
    assert observer.apply(out.commit).removed == (1,)
    assert bob.process(out.commit).removed_self
    alice.merge_pending_commit()
    assert observer.group_context == alice.group_context

    # A wrong external signature key is rejected.
    forged = external_remove(observer.group_context, 0, cs.generate_signature_key_pair()[0], 0)
    with pytest.raises(CryptoError):
        observer.apply(forged)

    # Carol asks to join (new_member_proposal); Alice commits it.
    carol_kp = _kp(b"carol")
    prop = new_member_add_proposal(
        alice.group_context, carol_kp.key_package, carol_kp.signature_private_key
    )
    alice.process(prop)
    observer.apply(prop)
    out = alice.commit()
    observer.apply(out.commit)
    alice.merge_pending_commit()
    carol = Group.join_from_welcome(out.welcome, carol_kp)
    assert carol.epoch_authenticator == alice.epoch_authenticator
    assert observer.group_context == carol.group_context


def test_observer_and_member_unchanged_on_bad_commits():
    alice, bob, carol = _group(3)
    old_group_info = alice.group_info()
    observer = GroupObserver.from_group_info(old_group_info)
    before = observer.to_bytes()
    out = bob.commit(remove=[2])
    raw = MLSMessage.decode(out.commit)
    # Bad signature.
    pm = raw.body
    bad = replace(pm, auth=replace(pm.auth, signature=bytes(len(pm.auth.signature))))
    with pytest.raises(CryptoError):
        observer.apply(MLSMessage(bad).encode())
    with pytest.raises(CryptoError):
        alice.process(MLSMessage(bad).encode())
    # Wrong epoch.
    wrong = replace(pm, content=replace(pm.content, epoch=pm.content.epoch + 1))
    with pytest.raises(ValidationError, match="epoch"):
        observer.apply(MLSMessage(wrong).encode())
    # Truncated bytes.
    with pytest.raises(DecodeError):
        observer.apply(out.commit[:-3])
    # A tampered confirmation tag: the observer cannot see it, members must reject it.
    tag = replace(pm, auth=replace(pm.auth, confirmation_tag=bytes(32)))
    with pytest.raises(MLSError):
        alice.process(MLSMessage(tag).encode())
    assert observer.to_bytes() == before
    # The genuine commit still applies everywhere afterwards.
    observer.apply(out.commit)
    alice.process(out.commit)
    bob.merge_pending_commit()
    assert carol.process(out.commit).removed_self
    assert alice.epoch_authenticator == bob.epoch_authenticator
    assert observer.group_context == alice.group_context
    # A GroupInfo that does not match the commit is refused.
    with pytest.raises(ValidationError, match="GroupContext"):
        observer.check_group_info(old_group_info)
    gi = MLSMessage.decode(out.group_info).body
    with pytest.raises(CryptoError):
        observer.check_group_info(replace(gi, signature=bytes(len(gi.signature))))
    with pytest.raises(ValidationError, match="confirmation tag"):
        observer.check_group_info(replace(gi, confirmation_tag=bytes(32)))
    observer.check_group_info(out.group_info)


def test_commit_referencing_unknown_proposal_rejected():
    alice, bob = _group(2)
    observer = GroupObserver.from_group_info(alice.group_info())
    prop = bob.propose_remove(0)
    alice.process(prop)
    out = bob.commit()  # references the proposal
    with pytest.raises(ValidationError, match="unknown proposal"):
        observer.apply(out.commit)  # the observer never saw the proposal


def test_welcome_without_tree_needs_out_of_band_tree():
    (alice,) = _group(1)
    bob_kp = _kp(b"bob")
    out = alice.commit(add=[bob_kp.key_package], ratchet_tree_in_welcome=False)
    alice.merge_pending_commit()
    with pytest.raises(ValidationError, match="no ratchet tree"):
        Group.join_from_welcome(out.welcome, bob_kp)
    bob = Group.join_from_welcome(out.welcome, bob_kp, alice.tree.to_bytes())
    assert bob.epoch_authenticator == alice.epoch_authenticator


def test_committer_leaves_out_conflicting_pending_proposals():
    alice, bob, carol = _group(3)
    observer = GroupObserver.from_group_info(alice.group_info())
    # Bob and Carol both propose to remove each other and both propose Alice's removal.
    props = [bob.propose_remove(2), carol.propose_remove(1), carol.propose_remove(0)]
    for p in props:
        alice.process(p)
        observer.apply(p)
    out = alice.commit()  # keeps the first Remove of leaf 2 and Remove of 1; never removes us
    assert observer.apply(out.commit).removed == (2, 1)
    alice.merge_pending_commit()
    assert observer.group_context == alice.group_context


def test_update_path_reusing_a_tree_key_is_rejected():
    from roost.mls.group.state import check_path_keys_fresh
    from roost.mls.update_path import UpdatePath

    alice, bob, carol = _group(3)
    out = bob.commit(force_path=True)
    path = MLSMessage.decode(out.commit).body.content.content.path
    check_path_keys_fresh(alice.tree, bob.leaf_index, path)
    carol_key = alice.tree.leaf(carol.leaf_index).encryption_key
    stolen = replace(path.nodes[0], encryption_key=carol_key)
    bad = UpdatePath(path.leaf_node, (stolen, *path.nodes[1:]))
    with pytest.raises(ValidationError, match="reuses the encryption key"):
        check_path_keys_fresh(alice.tree, bob.leaf_index, bad)
    twice = UpdatePath(path.leaf_node, (path.nodes[0], path.nodes[0]))
    with pytest.raises(ValidationError, match="repeats"):
        check_path_keys_fresh(alice.tree, bob.leaf_index, twice)


def test_observer_applies_commit_and_group_info_together():
    alice, bob = _group(2)
    observer = GroupObserver.from_group_info(alice.group_info())
    before = observer.to_bytes()
    out = alice.commit(force_path=True)
    wrong = bob.group_info()  # a valid GroupInfo, but of the old epoch
    with pytest.raises(ValidationError, match="GroupContext"):
        observer.apply(out.commit, group_info=wrong)
    assert observer.to_bytes() == before
    assert observer.apply(out.commit, group_info=out.group_info).epoch == alice.epoch + 1
    bob.process(out.commit)
    with pytest.raises(ValidationError, match="commits"):
        observer.apply(bob.propose_update(), group_info=out.group_info)
