"""key-schedule.json: every epoch, every secret, exporter and external_pub, all suites."""

from __future__ import annotations

import pytest

from roost.mls.crypto import SUPPORTED_SUITES, get_cipher_suite
from roost.mls.errors import CryptoError
from roost.mls.group_context import GroupContext
from roost.mls.key_schedule import (
    EpochSecrets,
    confirmation_tag,
    external_init_receiver,
    external_init_sender,
    joiner_secret,
    mls_exporter,
    verify_confirmation_tag,
    welcome_key_nonce,
    welcome_secret_from_joiner,
)

from .vectors import cases, h

FIELDS = (
    "joiner_secret",
    "welcome_secret",
    "init_secret",
    "sender_data_secret",
    "encryption_secret",
    "exporter_secret",
    "epoch_authenticator",
    "external_secret",
    "confirmation_key",
    "membership_key",
    "resumption_psk",
)


@pytest.mark.parametrize("case", cases("key-schedule"))
def test_key_schedule_vector(case):
    cs = get_cipher_suite(case["cipher_suite"])
    group_id = h(case["group_id"])
    init_secret = h(case["initial_init_secret"])
    for epoch, e in enumerate(case["epochs"]):
        gc = GroupContext(
            1, cs.suite_id, group_id, epoch, h(e["tree_hash"]), h(e["confirmed_transcript_hash"])
        )
        assert gc.encode() == h(e["group_context"])
        secrets = EpochSecrets.from_init(
            cs, init_secret, h(e["commit_secret"]), h(e["psk_secret"]), gc
        )
        for field in FIELDS:
            assert getattr(secrets, field) == h(e[field]), field
        assert secrets.external_pub(cs) == h(e["external_pub"])
        x = e["exporter"]
        # The vector's exporter label is a plain string (it merely looks like hex).
        exported = secrets.export(cs, x["label"].encode(), h(x["context"]), x["length"])
        assert exported == h(x["secret"])

        # A Welcome joiner starting from joiner_secret reaches the same epoch.
        joiner = joiner_secret(cs, init_secret, h(e["commit_secret"]), gc)
        assert welcome_secret_from_joiner(cs, joiner, h(e["psk_secret"])) == h(e["welcome_secret"])
        assert EpochSecrets.from_joiner(cs, joiner, h(e["psk_secret"]), gc) == secrets
        init_secret = secrets.init_secret


@pytest.mark.parametrize("suite", SUPPORTED_SUITES)
def test_external_init_roundtrip(suite):
    cs = get_cipher_suite(suite)
    gc = GroupContext(1, suite, b"g", 3, b"t" * cs.hash_len, b"c" * cs.hash_len)
    secrets = EpochSecrets.from_init(cs, bytes(cs.hash_len), None, None, gc)
    kem_output, init_for_joiner = external_init_sender(cs, secrets.external_pub(cs))
    assert len(init_for_joiner) == cs.hash_len
    assert external_init_receiver(cs, secrets.external_secret, kem_output) == init_for_joiner


def test_defaults_and_helpers():
    cs = get_cipher_suite(1)
    gc = GroupContext(1, 1, b"g", 0, b"t", b"c")
    a = EpochSecrets.from_init(cs, b"i" * 32, None, None, gc)
    b = EpochSecrets.from_init(cs, b"i" * 32, bytes(32), bytes(32), gc.encode())
    assert a == b
    key, nonce = welcome_key_nonce(cs, a.welcome_secret)
    assert (len(key), len(nonce)) == (16, 12)
    assert a.welcome_key_nonce(cs) == (key, nonce)
    assert mls_exporter(cs, a.exporter_secret, b"l", b"c", 20) == a.export(cs, b"l", b"c", 20)
    tag = confirmation_tag(cs, a.confirmation_key, b"hash")
    verify_confirmation_tag(cs, a.confirmation_key, b"hash", tag)
    with pytest.raises(CryptoError):
        verify_confirmation_tag(cs, a.confirmation_key, b"other", tag)
