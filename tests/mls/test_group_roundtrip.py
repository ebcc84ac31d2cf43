"""Our own clients talk to each other with the server's observer following every step."""

from __future__ import annotations

import pytest

from roost.mls.constants import ResumptionPSKUsage
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES, get_cipher_suite
from roost.mls.errors import MLSError, ValidationError
from roost.mls.extension_types import RequiredCapabilities
from roost.mls.group import Group
from roost.mls.group.member import PAST_EPOCHS_KEPT
from roost.mls.group.observer import GroupObserver
from roost.mls.key_package_gen import generate_key_package
from roost.mls.psk import PreSharedKeyID

SUITES = list(SUPPORTED_SUITES)


def _identity(suite: int, name: bytes):
    cs = get_cipher_suite(suite)
    priv, _ = cs.generate_signature_key_pair()
    return Credential.basic(name), priv


def _kp(suite: int, name: bytes):
    cred, priv = _identity(suite, name)
    return generate_key_package(suite, cred, priv)


def _deliver(msg: bytes, receivers, observer: GroupObserver | None):
    for g in receivers:
        g.process(msg)
    if observer is not None:
        observer.apply(msg)


def _same_epoch(observer: GroupObserver, *groups: Group) -> None:
    for g in groups:
        assert g.group_context == observer.group_context
        assert g.epoch_authenticator == groups[0].epoch_authenticator
        assert g.tree.to_bytes() == observer.tree.to_bytes()


def _chat(sender: Group, receivers, text: bytes) -> None:
    ct = sender.encrypt(text, authenticated_data=b"aad")
    for g in receivers:
        got = g.process(ct)
        assert got.kind == "application" and got.data == text
        assert got.sender.index == sender.leaf_index and got.authenticated_data == b"aad"


@pytest.mark.parametrize("suite", SUITES)
def test_full_lifecycle(suite):
    cred, priv = _identity(suite, b"alice")
    alice = Group.create(suite, cred, priv)
    observer = GroupObserver.from_group_info(alice.group_info())
    assert observer.epoch == 0 and observer.group_context == alice.group_context

    # Alice adds Bob and Carol in one commit; the observer checks commit and GroupInfo.
    bob_kp, carol_kp = _kp(suite, b"bob"), _kp(suite, b"carol")
    out = alice.commit(add=[bob_kp.key_package, carol_kp.key_package])
    observer.apply(out.commit)
    observer.check_group_info(out.group_info)
    alice.merge_pending_commit()
    bob = Group.join_from_welcome(out.welcome, bob_kp)
    carol = Group.join_from_welcome(out.welcome, carol_kp)
    _same_epoch(observer, alice, bob, carol)
    assert [i for i, _, _ in observer.roster()] == [0, 1, 2]

    _chat(alice, [bob, carol], b"hello")
    _chat(bob, [alice, carol], b"hi alice")
    _chat(carol, [alice, bob], b"hi both")

    # Bob: self-update commit with a path.
    out = bob.commit(force_path=True)
    _deliver(out.commit, [alice, carol], observer)
    observer.check_group_info(out.group_info)
    bob.merge_pending_commit()
    _same_epoch(observer, alice, bob, carol)
    _chat(bob, [alice, carol], b"new keys")

    # Carol proposes an Update; Alice commits it by reference.
    prop = carol.propose_update()
    _deliver(prop, [alice, bob], observer)
    out = alice.commit()
    _deliver(out.commit, [bob, carol], observer)
    alice.merge_pending_commit()
    _same_epoch(observer, alice, bob, carol)
    _chat(carol, [alice, bob], b"updated")

    # Serialise and restore Carol mid-conversation.
    carol = Group.from_bytes(carol.to_bytes())
    observer = GroupObserver.from_bytes(observer.to_bytes())
    _chat(alice, [bob, carol], b"after restore")
    _chat(carol, [alice, bob], b"restored carol speaks")

    # Alice removes Bob.
    out = alice.commit(remove=[bob.leaf_index])
    _deliver(out.commit, [carol], observer)
    result = bob.process(out.commit)
    assert result.removed_self and not bob.active
    alice.merge_pending_commit()
    _same_epoch(observer, alice, carol)
    assert len(observer.roster()) == 2

    # Dave joins by external commit from the GroupInfo the server holds.
    dcred, dpriv = _identity(suite, b"dave")
    dave, commit = Group.join_external(alice.group_info(), None, dcred, dpriv)
    _deliver(commit, [alice, carol], observer)
    _same_epoch(observer, alice, carol, dave)
    _chat(dave, [alice, carol], b"dave here")
    _chat(alice, [carol, dave], b"welcome dave")
    assert alice.export_secret(b"x", b"y", 32) == dave.export_secret(b"x", b"y", 32)


def test_pending_commit_survives_serialisation_and_own_commit_echo():
    cred, priv = _identity(1, b"alice")
    alice = Group.create(1, cred, priv)
    bob_kp = _kp(1, b"bob")
    out = alice.commit(add=[bob_kp.key_package])
    alice = Group.from_bytes(alice.to_bytes())
    alice.process(out.commit)  # the DS echoes our own commit back: merged
    bob = Group.join_from_welcome(out.welcome, bob_kp)
    assert alice.epoch_authenticator == bob.epoch_authenticator


def test_private_message_handshakes_between_members():
    from roost.mls.constants import WireFormat

    cred, priv = _identity(1, b"alice")
    alice = Group.create(1, cred, priv)
    bob_kp = _kp(1, b"bob")
    out = alice.commit(add=[bob_kp.key_package])
    alice.merge_pending_commit()
    bob = Group.join_from_welcome(out.welcome, bob_kp)
    bob.handshake_wire_format = WireFormat.PRIVATE_MESSAGE
    observer = GroupObserver.from_group_info(out.group_info)
    prop = bob.propose_update()
    with pytest.raises(ValidationError, match="PublicMessage"):
        observer.apply(prop)
    alice.process(prop)
    out = bob.commit()
    alice.process(out.commit)
    bob.merge_pending_commit()
    assert alice.epoch_authenticator == bob.epoch_authenticator


def test_tampered_application_message_rejected_and_state_kept():
    cred, priv = _identity(1, b"alice")
    alice = Group.create(1, cred, priv)
    bob_kp = _kp(1, b"bob")
    out = alice.commit(add=[bob_kp.key_package])
    alice.merge_pending_commit()
    bob = Group.join_from_welcome(out.welcome, bob_kp)
    ct = bytearray(alice.encrypt(b"secret"))
    ct[-1] ^= 1
    with pytest.raises(MLSError):
        bob.process(bytes(ct))
    # The real message still decrypts afterwards.
    assert bob.process(alice.encrypt(b"again")).data == b"again"


def test_wrongly_signed_application_message_rejected():
    """A member that signs with a key other than its leaf's is rejected by receivers."""
    cred, priv = _identity(1, b"alice")
    alice = Group.create(1, cred, priv)
    bob_kp = _kp(1, b"bob")
    out = alice.commit(add=[bob_kp.key_package])
    alice.merge_pending_commit()
    bob = Group.join_from_welcome(out.welcome, bob_kp)
    alice._sig_priv = get_cipher_suite(1).generate_signature_key_pair()[0]
    with pytest.raises(MLSError, match="signature"):
        bob.process(alice.encrypt(b"forged"))


def test_credential_policy_rejects_new_member():
    cred, priv = _identity(1, b"alice")

    def policy(credential, _key):
        return credential.identity != b"mallory"

    alice = Group.create(1, cred, priv, credential_policy=policy)
    with pytest.raises(ValidationError, match="policy"):
        alice.commit(add=[_kp(1, b"mallory").key_package])
    assert alice.epoch == 0 and len(alice.roster()) == 1


def test_psk_and_group_context_extensions_commits():
    cs = get_cipher_suite(1)
    cred, priv = _identity(1, b"alice")
    alice = Group.create(1, cred, priv)
    bob_kp = _kp(1, b"bob")
    out = alice.commit(add=[bob_kp.key_package])
    alice.merge_pending_commit()
    bob = Group.join_from_welcome(out.welcome, bob_kp)
    observer = GroupObserver.from_group_info(out.group_info)

    # External PSK known to both members, committed by value.
    for g in (alice, bob):
        g.external_psks[b"shared"] = b"psk secret"
    ext = PreSharedKeyID.external(b"shared", bytes(cs.hash_len))
    out = alice.commit(psks=[ext])
    _deliver(out.commit, [bob], observer)
    alice.merge_pending_commit()
    assert alice.epoch_authenticator == bob.epoch_authenticator

    # Resumption PSK of the previous epoch, proposed by Bob and committed by reference.
    res = PreSharedKeyID.resumption(
        ResumptionPSKUsage.APPLICATION, alice.group_id, alice.epoch - 1, bytes(cs.hash_len)
    )
    _deliver(bob.propose_psk(res), [alice], observer)
    out = alice.commit()
    _deliver(out.commit, [bob], observer)
    alice.merge_pending_commit()
    assert alice.epoch_authenticator == bob.epoch_authenticator

    # An unknown PSK makes the receiver reject the commit (and stay in its epoch).
    alice.external_psks[b"alice-only"] = b"x"
    out = alice.commit(psks=[PreSharedKeyID.external(b"alice-only", bytes(cs.hash_len))])
    epoch = bob.epoch
    with pytest.raises(ValidationError, match="unknown pre-shared key"):
        bob.process(out.commit)
    assert bob.epoch == epoch
    alice.clear_pending_commit()

    # GroupContextExtensions: require basic credentials from now on.
    req = RequiredCapabilities((), (), (1,)).to_extension()
    out = alice.commit(group_context_extensions=[req])
    _deliver(out.commit, [bob], observer)
    alice.merge_pending_commit()
    assert bob.group_context.extensions == (req,)
    assert observer.group_context == bob.group_context


def test_late_application_messages_of_past_epochs():
    cred, priv = _identity(1, b"alice")
    alice = Group.create(1, cred, priv)
    kps = [_kp(1, b"bob"), _kp(1, b"carol")]
    out = alice.commit(add=[k.key_package for k in kps])
    alice.merge_pending_commit()
    bob, carol = (Group.join_from_welcome(out.welcome, k) for k in kps)
    late = alice.encrypt(b"sent before the commit")
    old_proposal = bob.propose_update()
    out = bob.commit(force_path=True, include_pending=False)
    bob.merge_pending_commit()
    for g in (alice, carol):
        g.process(out.commit)
    # One epoch late: still readable, and restoring the state keeps that ability.
    carol = Group.from_bytes(carol.to_bytes())
    assert carol.process(late).data == b"sent before the commit"
    with pytest.raises(ValidationError, match="epoch"):
        carol.process(old_proposal)  # only application messages get the grace epochs
    # A state saved by the previous format (at most one past epoch, as an optional) loads.
    saved = bytearray(carol.to_bytes())
    assert saved[5:7] == b"\x00\x02"
    saved[5:7] = b"\x00\x01"
    assert Group.from_bytes(bytes(saved)).to_bytes() == carol.to_bytes()

    def epochs_pass(n: int) -> None:
        for _ in range(n):
            out = bob.commit(force_path=True)
            bob.merge_pending_commit()
            for g in (alice, carol):
                g.process(out.commit)

    # PAST_EPOCHS_KEPT epochs late (e.g. the receiver committed while it travelled): readable,
    # also after a restore; one more: refused.
    kept = alice.encrypt(b"three epochs behind")
    epochs_pass(PAST_EPOCHS_KEPT)
    carol = Group.from_bytes(carol.to_bytes())
    assert carol.process(kept).data == b"three epochs behind"
    stale = alice.encrypt(b"four epochs behind")
    epochs_pass(PAST_EPOCHS_KEPT + 1)
    with pytest.raises(ValidationError, match="epoch"):
        carol.process(stale)


def test_reinit_closes_the_group():
    cred, priv = _identity(1, b"alice")
    alice = Group.create(1, cred, priv)
    bob_kp = _kp(1, b"bob")
    out = alice.commit(add=[bob_kp.key_package])
    alice.merge_pending_commit()
    bob = Group.join_from_welcome(out.welcome, bob_kp)
    observer = GroupObserver.from_group_info(out.group_info)
    prop = bob.propose_reinit(b"new-group", 1)
    _deliver(prop, [alice], observer)
    out = alice.commit()  # the ReInit alone, by reference
    observer.apply(out.commit)
    got = bob.process(out.commit)
    assert got.reinit is not None and got.reinit.group_id == b"new-group"
    alice.merge_pending_commit()
    assert alice.reinit == got.reinit and alice.epoch_authenticator == bob.epoch_authenticator
    bob = Group.from_bytes(bob.to_bytes())
    for g in (alice, bob):
        with pytest.raises(ValidationError, match="re-initialised"):
            g.encrypt(b"too late")
