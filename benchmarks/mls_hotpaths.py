"""MLS hot paths of roost.mls: median wall time per operation, printed as a table.

    python benchmarks/mls_hotpaths.py [--runs N] [--adds M] [--leaves L] [--members B]
                                      [--stat median|min] [--clock wall|cpu]
                                      [--only ROW,..] [--profile ROW]

Rows (cipher suite 1; set-up such as restoring a state from bytes is outside the timing):

* decode of a PublicMessage commit (the M-add commit, and a small path commit)
* the server's GroupObserver applying a commit that adds M members (KeyPackages verified at
  upload, as the KeyPackage directory does, and cold: every signature checked in the commit)
* an existing member processing that commit
* a 1 KiB application message: Group.encrypt + Group.process (signing and verification
  included), each side alone, the Ed25519 floor under them, and the generic protection API
  without signatures
* KeyPackage generation
* tree hash of an L-leaf tree with every node filled (nothing cached)
* in a group of B members (--members): the observer's state load/save, applying a path
  commit and checking the GroupInfo that comes with it

``--profile ROW`` runs one row under cProfile and prints the top functions instead.
Targets come from the project's performance goals; compare rows within one run only (the
machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import os
import pstats
import statistics
import time
from collections.abc import Callable

from roost.mls import protection as P
from roost.mls.constants import LeafNodeSource, WireFormat
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.framing import FramedContent, MLSMessage, Sender
from roost.mls.group import Group, validation
from roost.mls.group.observer import GroupObserver
from roost.mls.group_context import GroupContext
from roost.mls.key_package_gen import default_capabilities, generate_key_package
from roost.mls.leaf_node import LeafNode
from roost.mls.ratchet_tree import RatchetTree
from roost.mls.secret_tree import SecretTree
from roost.mls.tree_nodes import ParentNode

SUITE = 1
CS = get_cipher_suite(SUITE)

Bench = Callable[[], Callable[[], object]]  # set-up (untimed) returning the timed call


STAT = statistics.median  # --stat min: more robust for before/after runs on a busy machine
# --clock cpu: this thread's CPU time, which leaves out the time other processes hold the core
# (on a shared machine it still includes their cache and SMT interference).
CLOCK = time.perf_counter


def median_ms(make: Bench, runs: int) -> float:
    samples = []
    for _ in range(runs):
        fn = make()
        gc.collect()
        t0 = CLOCK()
        fn()
        samples.append((CLOCK() - t0) * 1000)
    return STAT(samples)


def batch_median_ms(fn: Callable[[], object], runs: int, batch: int) -> float:
    """For sub-millisecond operations: median over ``runs`` batches of ``batch`` calls."""
    samples = []
    for _ in range(runs):
        gc.collect()
        t0 = CLOCK()
        for _ in range(batch):
            fn()
        samples.append((CLOCK() - t0) * 1000 / batch)
    return STAT(samples)


def _identity(name: bytes) -> tuple[Credential, bytes]:
    return Credential.basic(name), CS.generate_signature_key_pair()[0]


def _key_packages(prefix: bytes, n: int):
    out = []
    for i in range(n):
        cred, priv = _identity(prefix + b"%d" % i)
        out.append(generate_key_package(SUITE, cred, priv).key_package)
    return out


class Scenario:
    """Alice and Bob in a group the observer follows; Alice then commits M adds."""

    def __init__(self, adds: int) -> None:
        cred, priv = _identity(b"alice")
        alice = Group.create(SUITE, cred, priv)
        observer = GroupObserver.from_group_info(alice.group_info())
        bob_cred, bob_priv = _identity(b"bob")
        bob_bundle = generate_key_package(SUITE, bob_cred, bob_priv)
        out = alice.commit(add=[bob_bundle.key_package])
        observer.apply(out.commit)
        alice.merge_pending_commit()
        bob = Group.join_from_welcome(out.welcome, bob_bundle)
        # A small path commit (decode row).
        out = bob.commit(force_path=True)
        observer.apply(out.commit)
        alice.process(out.commit)
        bob.merge_pending_commit()
        self.path_commit = out.commit
        self.kps = _key_packages(b"member", adds)
        self.observer_state = observer.to_bytes()
        self.bob_state = bob.to_bytes()
        self.alice, self.bob = alice, bob
        self.add_commit = alice.commit(add=self.kps).commit

    def observer_apply(self, cold: bool) -> Bench:
        def make():
            if cold:
                validation._VERIFIED_KEY_PACKAGES.clear()
            else:  # what the KeyPackage directory does at upload time
                for kp in self.kps:
                    validation.verify_key_package_signatures(CS, kp)
            obs = GroupObserver.from_bytes(self.observer_state)
            return lambda: obs.apply(self.add_commit)

        return make

    def member_process(self) -> Bench:
        def make():
            for kp in self.kps:
                validation.verify_key_package_signatures(CS, kp)
            bob = Group.from_bytes(self.bob_state)
            return lambda: bob.process(self.add_commit)

        return make


class BigGroup:
    """An N-member group after one path commit: what the DS handles most of the time."""

    def __init__(self, members: int) -> None:
        cred, priv = _identity(b"owner")
        owner = Group.create(SUITE, cred, priv)
        out = owner.commit(add=_key_packages(b"big", members - 1))
        owner.merge_pending_commit()
        observer = GroupObserver.from_group_info(out.group_info)
        self.observer_state = observer.to_bytes()
        out = owner.commit(force_path=True)
        self.path_commit, self.group_info = out.commit, out.group_info
        observer.apply(out.commit)
        self.after_state = observer.to_bytes()

    def restore(self) -> Bench:
        return lambda: lambda: GroupObserver.from_bytes(self.observer_state)

    def save(self) -> Bench:
        def make():
            obs = GroupObserver.from_bytes(self.after_state)
            obs.tree._encoded = None  # as after a commit: the tree encoding is new
            return obs.to_bytes

        return make

    def apply_path_commit(self) -> Bench:
        def make():
            obs = GroupObserver.from_bytes(self.observer_state)
            return lambda: obs.apply(self.path_commit)

        return make

    def check_group_info(self) -> Bench:
        def make():
            obs = GroupObserver.from_bytes(self.after_state)
            return lambda: obs.check_group_info(self.group_info)

        return make


def app_message_roundtrip(alice: Group, bob: Group) -> Callable[[], object]:
    data = os.urandom(1024)

    def roundtrip():
        assert bob.process(alice.encrypt(data)).data == data

    return roundtrip


def app_encrypt_only(alice: Group) -> Callable[[], object]:
    """Group.encrypt on a copy of Alice (her own ratchet stays where Bob expects it)."""
    sender, data = Group.from_bytes(alice.to_bytes()), os.urandom(1024)
    return lambda: sender.encrypt(data)


def app_process_only(alice: Group, bob: Group, count: int) -> Callable[[], object]:
    """A copy of Bob processes, in order, messages a copy of Alice encrypted beforehand."""
    sender, receiver = Group.from_bytes(alice.to_bytes()), Group.from_bytes(bob.to_bytes())
    data = os.urandom(1024)
    messages = collections.deque(sender.encrypt(data) for _ in range(count))
    return lambda: receiver.process(messages.popleft())


def protection_only() -> Callable[[], object]:
    """Encrypt + decrypt of a pre-signed 1 KiB AuthenticatedContent (no signature work)
    through the generic protection API (protection.encrypt / decrypt: framing objects; the
    Group's application messages take the ApplicationKeys hot path instead)."""
    gc_bytes = GroupContext(1, SUITE, b"group", 5, b"t" * 32, b"c" * 32).encode()
    priv, _ = CS.generate_signature_key_pair()
    content = FramedContent(b"group", 5, Sender.member(0), b"ad", bytes(1024))
    ac = P.authenticate(CS, priv, WireFormat.PRIVATE_MESSAGE, content, gc_bytes)
    enc, sds = b"e" * 32, b"s" * 32
    sender, receiver = SecretTree(CS, enc, 4), SecretTree(CS, enc, 4)
    return lambda: P.decrypt(CS, P.encrypt(CS, ac, sender, sds), receiver, sds)


def full_tree_bytes(leaves: int) -> bytes:
    """A tree with every leaf and parent filled (as after many path commits)."""
    caps = default_capabilities(SUITE)
    nodes: list = []
    for i in range(2 * leaves - 1):
        if i & 1:
            nodes.append(ParentNode(os.urandom(32), os.urandom(32), ()))
        else:
            leaf = LeafNode(
                os.urandom(32),
                os.urandom(32),
                Credential.basic(b"member-%d" % i),
                caps,
                LeafNodeSource.COMMIT,
                None,
                os.urandom(32),
                (),
                os.urandom(64),
            )
            nodes.append(leaf)
    return RatchetTree(CS, nodes).to_bytes()


def tree_hash_bench(tree_bytes: bytes) -> Bench:
    def make():
        tree = RatchetTree.from_bytes(CS, tree_bytes)  # fresh: no cached hashes
        return tree.tree_hash

    return make


def decode_bench(data: bytes) -> Callable[[], object]:
    return lambda: MLSMessage.decode(data)


def key_package_bench() -> Callable[[], object]:
    cred, priv = _identity(b"kp")
    return lambda: generate_key_package(SUITE, cred, priv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--adds", type=int, default=100)
    ap.add_argument("--leaves", type=int, default=1000)
    ap.add_argument("--members", type=int, default=1000, help="size of the big group")
    ap.add_argument("--profile", default=None, help="row key to profile (see the table)")
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--only", default=None, help="comma-separated row keys to run")
    args = ap.parse_args()
    global STAT, CLOCK
    STAT = min if args.stat == "min" else statistics.median
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    runs = max(1, args.runs)

    t0 = time.perf_counter()
    sc = Scenario(args.adds)
    tree_bytes = full_tree_bytes(args.leaves)
    big = BigGroup(args.members)
    sig_priv, sig_pub = CS.generate_signature_key_pair()
    tbs = os.urandom(1100)
    sig = CS.sign_with_label(sig_priv, b"FramedContentTBS", tbs)
    print(f"set-up: {time.perf_counter() - t0:.1f} s (suite {SUITE}, {args.adds} adds)")

    rows: list[tuple[str, str, Callable[[], float], str]] = [
        (
            "decode",
            f"decode PublicMessage commit ({args.adds} adds, {len(sc.add_commit)} B)",
            lambda: batch_median_ms(decode_bench(sc.add_commit), runs, 5),
            "",
        ),
        (
            "decode_path",
            f"decode PublicMessage commit (path, {len(sc.path_commit)} B)",
            lambda: batch_median_ms(decode_bench(sc.path_commit), runs, 200),
            "",
        ),
        (
            "observer",
            f"observer applies {args.adds}-add commit (KeyPackages verified at upload)",
            lambda: median_ms(sc.observer_apply(cold=False), runs),
            "<= 50",
        ),
        (
            "observer_cold",
            f"observer applies {args.adds}-add commit (cold: all signatures)",
            lambda: median_ms(sc.observer_apply(cold=True), max(1, runs // 3)),
            "",
        ),
        (
            "member",
            f"member processes the {args.adds}-add commit",
            lambda: median_ms(sc.member_process(), max(1, runs // 3)),
            "",
        ),
        (
            "app",
            "1 KiB app message encrypt+decrypt (sign + verify)",
            lambda: batch_median_ms(app_message_roundtrip(sc.alice, sc.bob), runs, 50),
            "<= 0.3",
        ),
        (
            "app_enc",
            "  Group.encrypt alone (sign included)",
            lambda: batch_median_ms(app_encrypt_only(sc.alice), runs, 50),
            "",
        ),
        (
            "app_dec",
            "  Group.process alone (verify included)",
            lambda: batch_median_ms(app_process_only(sc.alice, sc.bob, runs * 50), runs, 50),
            "",
        ),
        (
            "sign",
            "  of which: Ed25519 sign_with_label (1.1 KB)",
            lambda: batch_median_ms(
                lambda: CS.sign_with_label(sig_priv, b"FramedContentTBS", tbs), runs, 50
            ),
            "",
        ),
        (
            "verify",
            "  of which: Ed25519 verify_with_label (1.1 KB)",
            lambda: batch_median_ms(
                lambda: CS.verify_with_label(sig_pub, b"FramedContentTBS", tbs, sig), runs, 50
            ),
            "",
        ),
        (
            "app_nosig",
            "1 KiB encrypt+decrypt, generic protection API, no signatures",
            lambda: batch_median_ms(protection_only(), runs, 200),
            "",
        ),
        (
            "keypackage",
            "KeyPackage generation",
            lambda: batch_median_ms(key_package_bench(), runs, 20),
            "",
        ),
        (
            "tree_hash",
            f"tree hash of a {args.leaves}-leaf full tree (uncached)",
            lambda: median_ms(tree_hash_bench(tree_bytes), runs),
            "",
        ),
        (
            "big_restore",
            f"observer state load (from_bytes), {args.members} members",
            lambda: median_ms(big.restore(), runs),
            "",
        ),
        (
            "big_save",
            f"observer state save (to_bytes), {args.members} members",
            lambda: median_ms(big.save(), runs),
            "",
        ),
        (
            "big_commit",
            f"observer applies a path commit, {args.members} members",
            lambda: median_ms(big.apply_path_commit(), runs),
            "",
        ),
        (
            "big_group_info",
            f"observer checks the GroupInfo (with tree), {args.members} members",
            lambda: median_ms(big.check_group_info(), runs),
            "",
        ),
    ]
    # The app rows run in the epoch after the add commit (Alice merges it, Bob processes it).
    sc.alice.merge_pending_commit()
    sc.bob.process(sc.add_commit)

    if args.profile:
        row = next(r for r in rows if r[0] == args.profile)
        prof = cProfile.Profile()
        prof.enable()
        row[2]()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return

    if args.only:
        rows = [r for r in rows if r[0] in args.only.split(",")]
    width = max(len(r[1]) for r in rows)
    unit = f"{args.stat} ms" + (" cpu" if args.clock == "cpu" else "")
    print(f"{'operation':<{width}}  {unit:>10}  {'target ms':>9}")
    print("-" * (width + 23))
    for key, label, measure, target in rows:
        print(f"{label:<{width}}  {measure():>10.3f}  {target:>9}  [{key}]", flush=True)


if __name__ == "__main__":
    main()
