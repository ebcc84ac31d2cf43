"""Which unreadable messages mean a member's state left the group's (``needs_resync``), on real
MLS messages of a two-member group: handshakes of our epoch and anything later do; older
messages, application messages of our epoch and non-messages do not."""

from __future__ import annotations

from roost.client.group_resync import message_epoch, needs_resync
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.group import Group
from roost.mls.key_package_gen import generate_key_package


def _pair() -> tuple[Group, Group]:
    cs = get_cipher_suite(1)
    a_priv, _ = cs.generate_signature_key_pair()
    b_priv, _ = cs.generate_signature_key_pair()
    alice = Group.create(1, Credential.basic(b"alice"), a_priv)
    bundle = generate_key_package(1, Credential.basic(b"bob"), b_priv)
    out = alice.commit(add=[bundle.key_package])
    alice.merge_pending_commit()
    assert out.welcome is not None
    return alice, Group.join_from_welcome(out.welcome, bundle)


def test_classification_on_real_messages() -> None:
    alice, bob = _pair()
    assert alice.epoch == bob.epoch == 1
    app_1 = alice.encrypt(b"epoch 1")
    commit_1 = alice.commit(force_path=True)
    assert message_epoch(app_1) == (1, False)
    assert message_epoch(commit_1.commit) == (1, True)
    # At bob's epoch: only the handshake (the DS accepted it: the others moved on with it).
    assert needs_resync(commit_1.commit, bob.epoch)
    assert not needs_resync(app_1, bob.epoch)
    alice.merge_pending_commit()
    app_2 = alice.encrypt(b"epoch 2")
    # A later epoch than ours: we missed a commit, whatever the message.
    assert needs_resync(app_2, bob.epoch)
    # Older than ours (e.g. sent before we rejoined): nothing to fix by rejoining.
    bob.process(commit_1.commit)
    commit_2 = alice.commit(force_path=True)
    assert not needs_resync(app_1, bob.epoch) and not needs_resync(commit_1.commit, bob.epoch)
    assert needs_resync(commit_2.commit, bob.epoch)
    # Not a message at all (a GroupInfo, garbage): never.
    assert message_epoch(alice.group_info()) is None
    assert not needs_resync(alice.group_info(), 0)
    assert not needs_resync(b"\x00\x01garbage", 0)
