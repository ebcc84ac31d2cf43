"""Passive-client vectors: join from the Welcome, then follow every epoch's proposals and
commit, checking the epoch authenticator after each step (and the observer alongside)."""

from __future__ import annotations

import pytest

from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES
from roost.mls.framing import MLSMessage
from roost.mls.group import Group
from roost.mls.key_package import KeyPackage

from .vectors import cases, h


def _join(case) -> Group:
    if case["cipher_suite"] not in SUPPORTED_SUITES:
        pytest.skip(f"cipher suite {case['cipher_suite']} not supported")
    kp = MLSMessage.decode(h(case["key_package"])).body
    assert isinstance(kp, KeyPackage)
    psks = {h(p["psk_id"]): h(p["psk"]) for p in case["external_psks"]}
    tree = h(case["ratchet_tree"]) if case.get("ratchet_tree") else None
    group = Group.join_from_welcome(
        h(case["welcome"]),
        (kp, h(case["init_priv"]), h(case["encryption_priv"]), h(case["signature_priv"])),
        tree,
        external_psks=psks,
    )
    assert group.epoch_authenticator == h(case["initial_epoch_authenticator"])
    return group


def _follow(group: Group, case) -> None:
    for n, epoch in enumerate(case["epochs"]):
        for p in epoch["proposals"]:
            assert group.process(h(p)).kind == "proposal"
        assert group.process(h(epoch["commit"])).kind == "commit", f"epoch {n}"
        assert group.epoch_authenticator == h(epoch["epoch_authenticator"]), f"epoch {n}"


@pytest.mark.parametrize("case", cases("passive-client-welcome"))
def test_passive_client_welcome(case):
    group = _join(case)
    _follow(group, case)


@pytest.mark.parametrize("case", cases("passive-client-handling-commit"))
def test_passive_client_handling_commit(case):
    group = _join(case)
    _follow(group, case)


@pytest.mark.parametrize("case", cases("passive-client-random"))
def test_passive_client_random(case):
    group = _join(case)
    _follow(group, case)
