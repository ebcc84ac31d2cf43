"""MLS core benchmark: roost.mls vs mls-rs (through the uniffi wheel), same run, same machine.

    python benchmarks/mls_bench.py [--runs N] [--members M]

Prints one row per operation with the median wall time in milliseconds over N runs:

* KeyPackage generation
* create a group + add M members in one commit (commit creation and applying it locally)
* an existing member processing that commit
* the server's public observer applying that commit (roost only; mls-rs has no observer),
  cold and with the KeyPackage signatures already verified when they were uploaded
* encrypt + decrypt of a 1 KiB application message

KeyPackages of the members are generated outside the timed sections. A column shows
"n/a (not implemented)" when that implementation lacks the operation.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The roost column drives roost through the interop adapter in tests/interop/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NA = "n/a (not implemented)"
MESSAGE = os.urandom(1024)


def median_ms(make: Callable[[], Callable[[], object]], runs: int) -> float:
    """Median over ``runs`` of timing ``make()()``; ``make`` does the untimed set-up."""
    samples = []
    for _ in range(runs):
        fn = make()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


# --- mls-rs ---------------------------------------------------------------------------------


class MlsRsBench:
    name = "mls-rs (uniffi)"

    def __init__(self) -> None:
        import mls_rs_uniffi as m

        self.m = m
        self._n = 0

    def client(self, identity: bytes):
        m = self.m
        kp = m.generate_signature_keypair(m.CipherSuite.CURVE25519_AES128)
        return m.Client(identity, kp, m.client_config_default())

    def _two_member_group(self):
        alice, bob = self.client(b"alice"), self.client(b"bob")
        self._n += 1
        group_id = b"bench-%d" % self._n
        ga = alice.create_group(group_id)
        out = ga.add_members([bob.generate_key_package_message()])
        ga.process_incoming_message(out.commit_message)  # mls-rs leaves own commits pending
        gb = bob.join_group(None, out.welcome_message).group
        return ga, gb

    def key_package(self):
        client = self.client(b"member")
        return client.generate_key_package_message

    def create_add(self, members: int):
        creator = self.client(b"creator")
        kps = [self.client(b"m%d" % i).generate_key_package_message() for i in range(members)]
        self._n += 1
        group_id = b"bench-%d" % self._n

        def run():
            g = creator.create_group(group_id)
            out = g.add_members(kps)
            g.process_incoming_message(out.commit_message)

        return run

    def process_add(self, members: int):
        ga, gb = self._two_member_group()
        kps = [self.client(b"m%d" % i).generate_key_package_message() for i in range(members)]
        out = ga.add_members(kps)
        commit = out.commit_message
        return lambda: gb.process_incoming_message(commit)

    def observe_add(self, members: int, *, pre_verified: bool = False):
        return None  # the wheel has no non-member (observer) API

    def encrypt_decrypt(self):
        ga, gb = self._two_member_group()

        def run():
            gb.process_incoming_message(ga.encrypt_application_message(MESSAGE))

        return run


# --- roost ----------------------------------------------------------------------------------


def roost_bench():
    """The roost column, or the reason it is missing."""
    try:
        return _RoostBench()
    except ImportError as e:
        return f"{NA}: {e}"


class _RoostBench:
    name = "roost.mls"

    def __init__(self) -> None:
        # Imported here so the benchmark still runs (mls-rs column) before the group API lands.
        from tests.interop.roost_peer import RoostPeer, roost_observer_for

        from roost.mls.group import validation

        # Welcomes carry the ratchet tree, as with mls-rs's default client config.
        self.Peer = lambda identity: RoostPeer(identity, ratchet_tree_extension=True)
        self.observer_for = roost_observer_for
        self._n = 0
        # roost caches KeyPackage signature verdicts process-wide (the DS verifies at upload).
        # In this single process the committer's checks would warm the cache for the receiver,
        # so every timed section starts cold unless it is the explicitly "pre-verified" row.
        self._kp_cache = getattr(validation, "_VERIFIED_KEY_PACKAGES", {})

    def cold(self, fn):
        self._kp_cache.clear()
        return fn

    def _gid(self) -> bytes:
        self._n += 1
        return b"bench-%d" % self._n

    def _two_member_group(self):
        alice, bob = self.Peer(b"alice"), self.Peer(b"bob")
        gid = self._gid()
        alice.create_group(gid)
        add = alice.add_members(gid, [bob.key_package()])
        bob.join(add.welcome, add.ratchet_tree)
        return gid, alice, bob

    def key_package(self):
        return self.Peer(b"member").key_package

    def create_add(self, members: int):
        creator = self.Peer(b"creator")
        kps = [self.Peer(b"m%d" % i).key_package() for i in range(members)]
        gid = self._gid()

        def run():
            creator.create_group(gid)
            creator.add_members(gid, kps)

        return self.cold(run)

    def process_add(self, members: int):
        gid, alice, bob = self._two_member_group()
        kps = [self.Peer(b"m%d" % i).key_package() for i in range(members)]
        commit = alice.add_members(gid, kps).commit
        return self.cold(lambda: bob.process(commit))

    def observe_add(self, members: int, *, pre_verified: bool = False):
        alice = self.Peer(b"alice")
        gid = self._gid()
        created = alice.create_group(gid)
        observer = self.observer_for(created).observer  # the bare roost GroupObserver
        kps = [self.Peer(b"m%d" % i).key_package() for i in range(members)]
        bundle = alice.add_members(gid, kps)
        run = lambda: observer.apply(bundle.commit)  # noqa: E731
        if pre_verified:
            # The DS verified these KeyPackages when they were uploaded to its directory.
            from tests.interop.roost_peer import _key_package

            from roost.mls import verify_key_package_signatures

            self._kp_cache.clear()
            for kp in kps:
                verify_key_package_signatures(alice.cs, _key_package(kp))
            return run
        return self.cold(run)

    def encrypt_decrypt(self):
        gid, alice, bob = self._two_member_group()
        return lambda: bob.process(alice.encrypt(gid, MESSAGE))


# --- table ----------------------------------------------------------------------------------


def measure(bench, runs: int, members: int) -> list[str]:
    heavy = max(1, runs // 4)  # the 100-member rows are slow; fewer runs keep the total sane
    rows: list[tuple[Callable[[], Callable[[], object] | None], int]] = [
        (bench.key_package, runs),
        (lambda: bench.create_add(members), heavy),
        (lambda: bench.process_add(members), heavy),
        (lambda: bench.observe_add(members), heavy),
        (lambda: bench.observe_add(members, pre_verified=True), heavy),
        (bench.encrypt_decrypt, runs),
    ]
    out = []
    for make, n in rows:
        try:
            if make() is None:
                out.append(NA)
                continue
            out.append(f"{median_ms(make, n):.2f}")
        except (NotImplementedError, ImportError, AttributeError) as e:
            out.append(f"{NA} ({type(e).__name__})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per light operation")
    parser.add_argument("--members", type=int, default=100, help="members added in one commit")
    args = parser.parse_args()

    labels = [
        "KeyPackage generation",
        f"create + add {args.members} members (1 commit)",
        f"member processes the add-{args.members} commit",
        f"observer applies the add-{args.members} commit",
        "  same, KeyPackages verified at upload",
        "encrypt + decrypt 1 KiB application message",
    ]
    columns: list[tuple[str, list[str]]] = []
    for factory in (MlsRsBench, roost_bench):
        try:
            bench = factory()
        except ImportError as e:
            columns.append((getattr(factory, "name", "?"), [f"{NA}: {e}"] * len(labels)))
            continue
        if isinstance(bench, str):
            columns.append(("roost.mls", [bench] * len(labels)))
            continue
        columns.append((bench.name, measure(bench, args.runs, args.members)))

    widths = [max(len("operation (median ms)"), *map(len, labels))]
    widths += [max(len(name), *map(len, values)) for name, values in columns]
    header = ["operation (median ms)"] + [name for name, _ in columns]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for i, label in enumerate(labels):
        cells = [label] + [values[i] for _, values in columns]
        print(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    print(f"\nruns: {args.runs} (light rows), {max(1, args.runs // 4)} (add-{args.members} rows)")


if __name__ == "__main__":
    main()
