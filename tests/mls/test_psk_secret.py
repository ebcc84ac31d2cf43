"""psk_secret.json (every case, every suite) and the PreSharedKeyID codec."""

from __future__ import annotations

import pytest

from roost.mls.constants import PSKType, ResumptionPSKUsage
from roost.mls.crypto import get_cipher_suite
from roost.mls.errors import DecodeError, ValidationError
from roost.mls.psk import PreSharedKeyID, check_psk_nonce, psk_label, psk_secret

from .vectors import cases, h


@pytest.mark.parametrize(
    "case",
    cases("psk_secret", ids=lambda i, c: f"{i}-suite{c['cipher_suite']}-{len(c['psks'])}psks"),
)
def test_psk_secret_vector(case):
    cs = get_cipher_suite(case["cipher_suite"])
    psks = [
        (PreSharedKeyID.external(h(p["psk_id"]), h(p["psk_nonce"])), h(p["psk"]))
        for p in case["psks"]
    ]
    for psk_id, _ in psks:
        check_psk_nonce(cs, psk_id)
        assert PreSharedKeyID.decode(psk_id.encode()) == psk_id
    assert psk_secret(cs, psks) == h(case["psk_secret"])


def test_empty_psk_list_is_zero():
    cs = get_cipher_suite(1)
    assert psk_secret(cs, []) == bytes(32)


def test_resumption_id_roundtrip_and_label():
    pid = PreSharedKeyID.resumption(ResumptionPSKUsage.BRANCH, b"gid", 7, b"n" * 32)
    enc = pid.encode()
    assert enc == b"\x02\x03\x03gid" + (7).to_bytes(8, "big") + b"\x20" + b"n" * 32
    assert PreSharedKeyID.decode(enc) == pid
    assert pid.psktype == PSKType.RESUMPTION
    assert psk_label(pid, 1, 2) == enc + b"\x00\x01\x00\x02"


def test_psk_id_decode_rejects_bad_input():
    for bad in (b"\x03\x00\x00", b"\x02\x09\x00" + bytes(8) + b"\x00", b"\x01\x05ab"):
        with pytest.raises(DecodeError):
            PreSharedKeyID.decode(bad)


def test_psk_nonce_length_checked():
    with pytest.raises(ValidationError):
        check_psk_nonce(get_cipher_suite(1), PreSharedKeyID.external(b"id", b"short"))


def test_psk_order_matters():
    cs = get_cipher_suite(1)
    a = (PreSharedKeyID.external(b"a", bytes(32)), b"A" * 32)
    b = (PreSharedKeyID.external(b"b", bytes(32)), b"B" * 32)
    assert psk_secret(cs, [a, b]) != psk_secret(cs, [b, a])
