"""welcome.json: decrypt each Welcome, check the GroupInfo signature and confirmation tag."""

from __future__ import annotations

import pytest

from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES, get_cipher_suite
from roost.mls.errors import CryptoError
from roost.mls.framing import MLSMessage
from roost.mls.group.welcome_open import (
    epoch_from_welcome,
    open_welcome,
    verify_group_info_signature,
)
from roost.mls.key_package import KeyPackage
from roost.mls.welcome import Welcome

from .vectors import cases, h


@pytest.mark.parametrize("case", cases("welcome"))
def test_welcome_vector(case):
    suite = case["cipher_suite"]
    if suite not in SUPPORTED_SUITES:
        pytest.skip(f"cipher suite {suite} not supported")
    cs = get_cipher_suite(suite)
    kp = MLSMessage.decode(h(case["key_package"])).body
    welcome = MLSMessage.decode(h(case["welcome"])).body
    assert isinstance(kp, KeyPackage) and isinstance(welcome, Welcome)

    opened = open_welcome(cs, welcome, kp, h(case["init_priv"]))
    verify_group_info_signature(cs, opened.group_info, h(case["signer_pub"]))
    epoch_from_welcome(cs, opened)  # raises unless the confirmation tag matches

    # A wrong signer key must be rejected.
    other_pub = cs.generate_signature_key_pair()[1]
    with pytest.raises(CryptoError):
        verify_group_info_signature(cs, opened.group_info, other_pub)
