"""Robustness of the server's ``GroupObserver`` against hostile input.

A real group is built with our member-side ``Group`` (adds, a path commit, Update/Add/Remove
proposals committed by reference, an external join, removals) while an observer follows it.
The recorded PublicMessages and GroupInfos are then the seeds for well over 100,000 inputs fed
to an observer walking the same history: random bytes, byte-level mutations (bit flips,
inserts, deletes, truncations, splices between messages), field splices between decoded
messages, mutated contents re-signed with the real sender keys (so that they pass the
signature check and reach the proposal rules, leaf/path validation and parent hashes), and
hypothesis-driven structural edits.

For every input:
* only ``DecodeError`` / ``ValidationError`` (and subclasses) may come out;
* a rejected input leaves the observer exactly as it was (serialised state and tree nodes);
* an accepted input that was not re-signed must carry the signed content of a real message of
  that epoch (only the fields the server cannot check -- membership tag, confirmation tag --
  may differ). A changed confirmation tag is then caught by ``check_group_info``.
After each step's inputs the same (never rebuilt) observer applies the real message, so it
follows the real group to the end.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.mls.constants import ContentType, SenderType, WireFormat
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import DecodeError, ValidationError
from roost.mls.framing import (
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PublicMessage,
    Sender,
    framed_content_tbs,
)
from roost.mls.group import Group
from roost.mls.group.observer import GroupObserver
from roost.mls.key_package_gen import generate_key_package, sign_leaf_node
from roost.mls.proposals import ProposalOrRef, Remove
from roost.mls.update_path import HPKECiphertext

SUITE = 1
CS = get_cipher_suite(SUITE)
DOCUMENTED = (DecodeError, ValidationError)  # CryptoError is a ValidationError

# Input budget per family (summed over all steps); the total is asserted >= 100,000.
RANDOM_INPUTS = 16_000
BYTE_MUTATIONS = 70_000
FIELD_SPLICES = 8_000
RESIGNED_MUTATIONS = 6_000
GROUP_INFO_MUTATIONS = 6_000
HYPOTHESIS_EXAMPLES = 1_000
MIN_TOTAL = 100_000


# --- the real group ---------------------------------------------------------------------------


@dataclass
class Step:
    """One real message and the observer state around it."""

    kind: str  # "proposal" or "commit"
    message: bytes
    before: bytes  # observer.to_bytes() before the message
    after: bytes  # ... and after it
    keys: dict[int, bytes]  # leaf index -> signature private key of that epoch's members
    signer_key: bytes  # the key that signed this message
    group_info: bytes | None = None  # submitted with a commit
    witness: bytes | None = None  # Group.to_bytes() of a receiving member before the message
    decoded: PublicMessage = field(init=False)

    def __post_init__(self) -> None:
        self.decoded = MLSMessage.decode(self.message).body  # type: ignore[assignment]


@dataclass
class History:
    steps: list[Step]
    initial_group_info: bytes
    final_state: bytes
    members: list[Group]
    # Other real MLSMessages the server sees but must never apply: PrivateMessages
    # (application and handshake), a Welcome, a KeyPackage.
    other_messages: list[bytes] = field(default_factory=list)


def _identity(name: bytes) -> tuple[Credential, bytes]:
    return Credential.basic(name), CS.generate_signature_key_pair()[0]


def _key_package(name: bytes):
    cred, priv = _identity(name)
    return generate_key_package(SUITE, cred, priv)


def _build_history() -> History:
    cred, priv = _identity(b"alice")
    alice = Group.create(SUITE, cred, priv)
    keys: dict[int, bytes] = {}  # id(group) -> signature key
    groups: list[Group] = [alice]
    keys[id(alice)] = priv
    initial_gi = alice.group_info()
    observer = GroupObserver.from_group_info(initial_gi)
    steps: list[Step] = []

    def epoch_keys() -> dict[int, bytes]:
        return {g.leaf_index: keys[id(g)] for g in groups}

    def send(sender: Group | None, msg: bytes, kind: str, signer_key: bytes, gi=None) -> None:
        before, ek = observer.to_bytes(), epoch_keys()
        observer.apply(msg)
        if gi is not None:
            observer.check_group_info(gi)
        witness = None
        for g in list(groups):
            if g is sender:
                continue
            if witness is None:
                witness = g.to_bytes()
            result = g.process(msg)
            if result.removed_self:
                groups.remove(g)
        steps.append(Step(kind, msg, before, observer.to_bytes(), ek, signer_key, gi, witness))

    def commit(committer: Group, **kwargs):
        out = committer.commit(**kwargs)
        send(committer, out.commit, "commit", keys[id(committer)], out.group_info)
        committer.merge_pending_commit()
        return out

    def join(out, bundle) -> Group:
        g = Group.join_from_welcome(out.welcome, bundle)
        keys[id(g)] = bundle.signature_private_key
        groups.append(g)
        return g

    # epoch 0: two adds by value (no path needed)
    bob_kp, carol_kp = _key_package(b"bob"), _key_package(b"carol")
    out = commit(alice, add=[bob_kp.key_package, carol_kp.key_package])
    bob, carol = join(out, bob_kp), join(out, carol_kp)
    others = [out.welcome, MLSMessage(bob_kp.key_package).encode(), bob.encrypt(b"hello")]
    carol.handshake_wire_format = WireFormat.PRIVATE_MESSAGE
    others.append(carol.propose_remove(bob.leaf_index))  # never delivered
    carol.handshake_wire_format = WireFormat.PUBLIC_MESSAGE
    # epoch 1: a path-only commit
    commit(bob, force_path=True)
    # epoch 2: Update and Add proposals, committed by reference
    send(carol, carol.propose_update(), "proposal", keys[id(carol)])
    dave_kp = _key_package(b"dave")
    send(bob, bob.propose_add(dave_kp.key_package), "proposal", keys[id(bob)])
    out = commit(alice)
    dave = join(out, dave_kp)
    # epoch 3: a Remove proposal by reference plus an Add by value
    send(dave, dave.propose_remove(carol.leaf_index), "proposal", keys[id(dave)])
    erin_kp = _key_package(b"erin")
    out = commit(bob, add=[erin_kp.key_package])
    erin = join(out, erin_kp)
    # epoch 4: external join
    fcred, fpriv = _identity(b"frank")
    frank, ext_commit = Group.join_external(alice.group_info(), None, fcred, fpriv)
    keys[id(frank)] = fpriv
    send(frank, ext_commit, "commit", fpriv, frank.group_info())
    groups.append(frank)
    # epoch 5: Update by reference + Remove by value, committed by the newcomer
    send(erin, erin.propose_update(), "proposal", keys[id(erin)])
    commit(frank, remove=[dave.leaf_index])
    # epoch 6: one more path commit
    commit(alice, force_path=True)
    for g in groups:
        assert g.group_context == observer.group_context
    others.append(alice.encrypt(b"bye"))
    return History(steps, initial_gi, observer.to_bytes(), groups, others)


@pytest.fixture(scope="module")
def history() -> History:
    return _build_history()


# --- feeding the observer -----------------------------------------------------------------------


@dataclass
class Feeder:
    """Feeds one step's inputs to a live observer, restoring it only after an acceptance."""

    step: Step
    observer: GroupObserver
    same_epoch: list[Step]  # real messages of this epoch (a proposal may be replayed)
    stats: Counter
    _before: bytes = b""
    _nodes: list = field(default_factory=list)
    _state: object = None
    _refs: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._snapshot()

    def _snapshot(self) -> None:
        self._before = self.observer.to_bytes()
        assert self._before == self.step.before
        self._nodes = self.observer.tree.nodes()
        self._state = self.observer.public_state
        self._refs = self.observer.pending_proposal_refs()

    def restore(self) -> None:
        self.observer = GroupObserver.from_bytes(self.step.before)
        self._snapshot()

    def feed(self, data: bytes, *, resigned: bool = False, with_group_info: bool = False) -> bool:
        """Apply ``data``; True if the observer accepted it. ``with_group_info``: a commit
        step's input goes through the DS's atomic form, ``apply(commit, group_info=...)``."""
        self.stats["inputs"] += 1
        gi = self.step.group_info if with_group_info else None
        try:
            self.observer.apply(data, group_info=gi)
        except DOCUMENTED as e:
            self.stats[type(e).__name__] += 1
            self._assert_unchanged(e)
            return False
        self.stats["accepted_resigned" if resigned else "accepted"] += 1
        if resigned:
            self._check_accepted_resigned()
        else:
            self._check_accepted_unsigned_change(data, atomic=gi is not None)
        self.restore()
        return True

    def _assert_unchanged(self, e: Exception) -> None:
        obs = self.observer
        # The very same state object and tree nodes (nothing mutated in place behind a
        # cache), the same pending proposals and confirmation tag ...
        assert obs.public_state is self._state, f"state replaced by a rejected input: {e!r}"
        assert obs.tree.nodes() == self._nodes, f"tree mutated by a rejected input: {e!r}"
        assert obs.pending_proposal_refs() == self._refs
        # ... and, whenever the input got past decoding (or every 16th input), the whole
        # serialised state byte for byte.
        if not isinstance(e, DecodeError) or self.stats["inputs"] % 16 == 0:
            assert obs.to_bytes() == self._before, f"state changed by {e!r}"

    def _check_accepted_resigned(self) -> None:
        # A re-signed variant the server cannot tell apart from a real one (e.g. a garbled
        # encrypted path secret): its state must at least persist and reload identically.
        state = self.observer.to_bytes()
        assert GroupObserver.from_bytes(state).to_bytes() == state

    def _check_accepted_unsigned_change(self, data: bytes, *, atomic: bool = False) -> None:
        pm = MLSMessage.decode(data).body
        assert isinstance(pm, PublicMessage)
        real = next(
            (
                s
                for s in self.same_epoch
                if s.decoded.content == pm.content and s.decoded.auth.signature == pm.auth.signature
            ),
            None,
        )
        assert real is not None, "accepted a message whose signed content is not a real one"
        if real is not self.step:  # another real message of this epoch (replay / reorder)
            obs = self.observer
            if real.kind == "proposal":  # queued next to the ones already received
                assert obs.public_state is self._state
                ref = CS.proposal_ref(pm.authenticated_content().encode())
                assert set(obs.pending_proposal_refs()) == {*self._refs, ref}
            else:  # a commit whose proposals were all received already
                assert obs.to_bytes() == real.after
            self.stats["accepted_other_real_message"] += 1
        elif pm.auth.confirmation_tag == real.decoded.auth.confirmation_tag:
            # Same signed content; at most the membership tag differs (the server has no
            # membership_key to check it).
            assert self.observer.to_bytes() == self.step.after
            self.stats["accepted_same_signed_content"] += 1
        else:
            # Only members can check a confirmation tag; the server catches the change when
            # it checks the GroupInfo signed by the committer: at once in the atomic form,
            # afterwards (too late: the state moved on) in the plain one.
            assert not atomic, "apply(commit, group_info) accepted a changed confirmation tag"
            with pytest.raises(ValidationError, match="confirmation tag"):
                self.observer.check_group_info(self.step.group_info)
            self.stats["accepted_confirmation_tag_changed"] += 1


def _walk(history: History, per_step: Callable[[Feeder, int], None]) -> Counter:
    """Walk the real history with one observer, feeding each step's inputs first."""
    stats: Counter = Counter()
    observer = GroupObserver.from_group_info(history.initial_group_info)
    for i, step in enumerate(history.steps):
        epoch = step.decoded.content.epoch
        same = [s for s in history.steps if s.decoded.content.epoch == epoch]
        feeder = Feeder(step, observer, same, stats)
        per_step(feeder, i)
        observer = feeder.observer
        # The real message is still accepted after all the junk.
        result = observer.apply(step.message)
        assert result.kind == step.kind
        if step.group_info is not None:
            observer.check_group_info(step.group_info)
        assert observer.to_bytes() == step.after
    assert observer.to_bytes() == history.final_state
    for g in history.members:
        assert g.group_context == observer.group_context
        assert g.tree.to_bytes() == observer.tree.to_bytes()
    return stats


def _report(name: str, stats: Counter) -> None:
    detail = ", ".join(f"{k}={v}" for k, v in sorted(stats.items()) if k != "inputs")
    print(f"\n{name}: {stats['inputs']} inputs fed to the observer ({detail})")
    _TOTALS[name] = stats["inputs"]


_TOTALS: dict[str, int] = {}


def _budget(n: int):
    """Parametrize with the input budget so that ``pytest -v`` shows the count in the id."""
    return pytest.mark.parametrize("budget", [n], ids=lambda b: f"{b}-inputs")


# --- byte-level inputs ----------------------------------------------------------------------------


def _random_input(rng: random.Random) -> bytes:
    n = rng.choice((0, 1, 2, 3, 4, 5, 8, 16, 64, 200, 1000))
    body = rng.randbytes(rng.randint(0, n))
    r = rng.random()
    if r < 0.4:  # right envelope: MLS 1.0, PublicMessage; random rest
        return b"\x00\x01\x00\x01" + body
    if r < 0.5:
        return b"\x00\x01" + rng.randbytes(2) + body
    return body


def _byte_mutation(rng: random.Random, data: bytes, donors: list[bytes]) -> bytes:
    b = bytearray(data)
    op = rng.randrange(11)
    pos = rng.randrange(len(b))
    if op <= 2:  # 1-3 bit flips (weighted: the most common real corruption)
        for _ in range(op + 1):
            p = rng.randrange(len(b))
            b[p] ^= 1 << rng.randrange(8)
    elif op == 3:
        b[pos] = rng.randrange(256)
    elif op == 4:
        b[pos] = rng.choice((0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFF))
    elif op == 5:
        b[pos:pos] = rng.randbytes(rng.choice((1, 1, 2, 4, 32)))
    elif op == 6:
        del b[pos : pos + rng.choice((1, 1, 2, 4, 32))]
    elif op == 7:
        del b[pos:]
    elif op == 8:
        b += rng.randbytes(rng.choice((1, 2, 32)))
    elif op == 9:  # splice: our prefix, another message's suffix
        donor = rng.choice(donors)
        b[pos:] = donor[rng.randrange(len(donor)) :]
    else:  # copy a chunk of another message over ours
        donor = rng.choice(donors)
        start = rng.randrange(len(donor))
        chunk = donor[start : start + rng.randint(1, 64)]
        b[pos : pos + len(chunk)] = chunk
    return bytes(b)


@_budget(RANDOM_INPUTS + BYTE_MUTATIONS)
def test_random_and_byte_mutated_inputs(history: History, budget: int):
    rng = random.Random(0x5EED)
    donors = [s.message for s in history.steps] + [
        s.group_info for s in history.steps if s.group_info
    ]
    donors += history.other_messages
    n = len(history.steps)

    def per_step(f: Feeder, _i: int) -> None:
        for _ in range(RANDOM_INPUTS // n):
            f.feed(_random_input(rng))
        atomic = f.step.group_info is not None
        for k in range(BYTE_MUTATIONS // n):  # commits: every other one with its GroupInfo
            f.feed(_byte_mutation(rng, f.step.message, donors), with_group_info=atomic and k & 1)
        # Every truncation point of the real message.
        for cut in range(len(f.step.message)):
            f.feed(f.step.message[:cut])

    stats = _walk(history, per_step)
    _report("random + byte mutations", stats)
    assert stats["inputs"] >= RANDOM_INPUTS + BYTE_MUTATIONS


# --- field splices between decoded messages ------------------------------------------------------


def _field_splices(rng: random.Random, pm: PublicMessage, other: PublicMessage) -> Iterator:
    """PublicMessages mixing fields of two real messages (no re-signing)."""
    c, o = pm.content, other.content
    yield dataclasses.replace(pm, auth=other.auth)
    yield dataclasses.replace(pm, content=dataclasses.replace(c, content=o.content))
    yield dataclasses.replace(pm, content=dataclasses.replace(c, sender=o.sender))
    yield dataclasses.replace(pm, content=dataclasses.replace(c, epoch=o.epoch))
    yield dataclasses.replace(pm, content=dataclasses.replace(c, group_id=rng.randbytes(16)))
    yield dataclasses.replace(pm, content=dataclasses.replace(c, authenticated_data=b"x"))
    yield dataclasses.replace(pm, membership_tag=other.membership_tag)
    yield dataclasses.replace(
        pm, auth=dataclasses.replace(pm.auth, signature=rng.randbytes(len(pm.auth.signature)))
    )
    yield dataclasses.replace(pm, auth=dataclasses.replace(pm.auth, signature=b""))


def _encode_or_none(pm: PublicMessage) -> bytes | None:
    try:
        return MLSMessage(pm).encode()
    except (ValueError, OverflowError):  # not encodable (e.g. tag presence): skip it
        return None


@_budget(FIELD_SPLICES)
def test_field_splices(history: History, budget: int):
    rng = random.Random(7)
    decoded = [s.decoded for s in history.steps]
    per = FIELD_SPLICES // (len(history.steps) * 9)

    def per_step(f: Feeder, _i: int) -> None:
        # Replays: every real message of the whole history, valid only in its own epoch,
        # and the non-PublicMessage ones, never valid for the observer.
        for other in history.steps:
            f.feed(other.message)
        for other in history.other_messages:
            assert not f.feed(other)
        for _ in range(per):
            for pm in _field_splices(rng, f.step.decoded, rng.choice(decoded)):
                data = _encode_or_none(pm)
                if data is not None:
                    f.feed(data)

    stats = _walk(history, per_step)
    _report("field splices and replays", stats)
    assert stats["inputs"] >= FIELD_SPLICES // 2


# --- mutations re-signed with the real keys ---------------------------------------------------------


def _sign_content(
    f: Feeder,
    content: FramedContent,
    auth: FramedContentAuthData,
    membership_key: bytes | None = None,
) -> bytes | None:
    """``content`` as a PublicMessage signed by the key of its sender (if we know it), with
    a membership tag under ``membership_key`` (zeros without one: the server cannot tell)."""
    sender = content.sender
    if sender.sender_type == SenderType.MEMBER:
        key = f.step.keys.get(sender.index, f.step.signer_key)
    else:
        key = f.step.signer_key
    ctx = f.observer.public_state.context_bytes
    try:
        tbs = framed_content_tbs(WireFormat.PUBLIC_MESSAGE, content, ctx)
        signed = dataclasses.replace(
            auth, signature=CS.sign_with_label(key, b"FramedContentTBS", tbs)
        )
        if content.content_type == ContentType.COMMIT and signed.confirmation_tag is None:
            signed = dataclasses.replace(signed, confirmation_tag=bytes(CS.hash_len))
        if content.content_type != ContentType.COMMIT:
            signed = dataclasses.replace(signed, confirmation_tag=None)
        tag = None
        if sender.sender_type == SenderType.MEMBER:
            tag = bytes(CS.hash_len)
            if membership_key is not None:
                ac = AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, content, signed)
                tag = CS.mac(membership_key, ac.tbm(ctx))
        return MLSMessage(PublicMessage(content, signed, tag)).encode()
    except (ValueError, OverflowError):
        return None


@_budget(RESIGNED_MUTATIONS)
def test_resigned_content_mutations(history: History, budget: int):
    """Byte mutations of the FramedContent, re-signed: these get past the signature check
    and exercise decoding of the body, the proposal rules, leaf and path validation."""
    rng = random.Random(11)
    donors = [s.decoded.content.encode() for s in history.steps]
    per = RESIGNED_MUTATIONS // len(history.steps)

    def per_step(f: Feeder, _i: int) -> None:
        pm = f.step.decoded
        raw = pm.content.encode()
        fed = 0
        while fed < per:
            try:
                content = FramedContent.decode(_byte_mutation(rng, raw, donors))
            except DecodeError:
                continue
            data = _sign_content(f, content, pm.auth)
            if data is not None:
                f.feed(data, resigned=True)
                fed += 1

    stats = _walk(history, per_step)
    _report("re-signed content mutations", stats)
    assert stats["inputs"] >= RESIGNED_MUTATIONS * 9 // 10


# --- differential: the observer against a member ---------------------------------------------

# What only a member can check: path secret decryption, the confirmation tag (both need the
# group's secrets), and rules about its own messages.
MEMBER_ONLY = re.compile(r"confirmation tag|AEAD|HPKE|decrypt|own proposal|own commit")
DIFFERENTIAL_INPUTS = 1_600


def _membership_key(member: Group) -> bytes:
    # Test-only peek at the member's epoch secrets: lets the mutated messages carry a valid
    # membership tag, so the member runs its full pipeline instead of stopping at the tag.
    return member._epoch.secrets.membership_key  # noqa: SLF001


def _check_agreement(witness_state: bytes, data: bytes, observer_accepted: bool, outcomes) -> None:
    try:
        Group.from_bytes(witness_state).process(data)
    except DOCUMENTED as e:
        if observer_accepted:
            assert MEMBER_ONLY.search(str(e)), f"observer accepted, member rejected: {e!r}"
            outcomes["member-only rejection"] += 1
        else:
            outcomes["both rejected"] += 1
    else:
        assert observer_accepted, "the observer rejected what a member accepts"
        outcomes["both accepted"] += 1


@_budget(DIFFERENTIAL_INPUTS)
def test_observer_agrees_with_a_member_on_resigned_mutations(history: History, budget: int):
    """Re-signed content mutations with a valid membership tag, fed to the observer and to a
    receiving member: the observer must reject whatever the member rejects, except for the
    reasons only a member can check (MEMBER_ONLY), and accept whatever the member accepts."""
    rng = random.Random(17)
    donors = [s.decoded.content.encode() for s in history.steps]
    per = DIFFERENTIAL_INPUTS // sum(s.witness is not None for s in history.steps)
    outcomes: Counter = Counter()

    def per_step(f: Feeder, _i: int) -> None:
        witness_state = f.step.witness
        if witness_state is None:  # the creator's first commit: no other member yet
            return
        key = _membership_key(Group.from_bytes(witness_state))
        raw = f.step.decoded.content.encode()
        fed = 0
        while fed < per:
            try:
                content = FramedContent.decode(_byte_mutation(rng, raw, donors))
            except DecodeError:
                continue
            data = _sign_content(f, content, f.step.decoded.auth, key)
            if data is None:
                continue
            fed += 1
            _check_agreement(witness_state, data, f.feed(data, resigned=True), outcomes)

    stats = _walk(history, per_step)
    _report("observer vs member (re-signed, valid membership tag)", stats)
    print(f"  agreement: {dict(outcomes)}")
    assert stats["inputs"] >= DIFFERENTIAL_INPUTS * 9 // 10


# --- GroupInfo checks ------------------------------------------------------------------------------


@_budget(GROUP_INFO_MUTATIONS)
def test_group_info_mutations(history: History, budget: int):
    """``check_group_info`` and ``from_group_info`` on mutated GroupInfos."""
    rng = random.Random(13)
    gis = [history.initial_group_info] + [s.group_info for s in history.steps if s.group_info]
    stats: Counter = Counter()
    observer = GroupObserver.from_group_info(history.initial_group_info)
    commits = [s for s in history.steps if s.group_info is not None]
    per = GROUP_INFO_MUTATIONS // len(commits)
    for step in history.steps:
        observer.apply(step.message)
        if step.group_info is None:
            continue
        before = observer.to_bytes()
        real = MLSMessage.decode(step.group_info).body
        for other in gis:  # GroupInfos of other epochs are refused
            stats["inputs"] += 1
            if other == step.group_info:
                continue
            with pytest.raises(ValidationError):
                observer.check_group_info(other)
            stats["replay_rejected"] += 1
        for k in range(per):
            data = _byte_mutation(rng, step.group_info, gis)
            stats["inputs"] += 1
            try:
                gi = observer.check_group_info(data)
            except DOCUMENTED as e:
                stats[type(e).__name__] += 1
            else:
                assert gi == real  # strict codec: accepted means the same GroupInfo
                stats["accepted"] += 1
            assert observer.to_bytes() == before
            if k % 20 == 0:  # the bootstrap path is heavier (full tree validation)
                stats["inputs"] += 1
                try:
                    fresh = GroupObserver.from_group_info(data)
                except DOCUMENTED as e:
                    stats["bootstrap_" + type(e).__name__] += 1
                else:
                    assert fresh.group_context == observer.group_context
                    stats["bootstrap_accepted"] += 1
        observer.check_group_info(step.group_info)
    _report("GroupInfo mutations", stats)


STATE_MUTATIONS = 3_000


@_budget(STATE_MUTATIONS)
def test_persisted_state_mutations(history: History, budget: int):
    """A corrupted stored observer state (``from_bytes``) raises only DecodeError (or a
    ValidationError); whatever loads must save back to the very same bytes."""
    rng = random.Random(19)
    states = [s.before for s in history.steps] + [history.final_state]
    stats: Counter = Counter()
    for _ in range(budget):
        data = _byte_mutation(rng, rng.choice(states), states)
        stats["inputs"] += 1
        try:
            obs = GroupObserver.from_bytes(data)
        except DOCUMENTED as e:
            stats[type(e).__name__] += 1
        else:
            assert obs.to_bytes() == data
            stats["loaded"] += 1
    _report("persisted state mutations", stats)


def _with_suite(data: bytes, offset: int, suite: int) -> bytes:
    return data[:offset] + suite.to_bytes(2, "big") + data[offset + 2 :]


def test_stored_state_with_unknown_suite_is_a_decode_error(history: History):
    state = history.final_state
    gc = GroupObserver.from_bytes(state).group_context.encode()
    at = state.index(gc) + 2  # GroupContext: version (2 bytes), then cipher_suite
    with pytest.raises(DecodeError):
        GroupObserver.from_bytes(_with_suite(state, at, 0x0401))


def test_group_info_with_unknown_suite_raises_a_documented_error(history: History):
    gi = history.initial_group_info  # MLSMessage: version, wire_format, then GroupContext
    with pytest.raises(DOCUMENTED):
        GroupObserver.from_group_info(_with_suite(gi, 6, 0x0401))


# --- hypothesis: structural edits, re-signed --------------------------------------------------------

_OPS = (
    "epoch",
    "group_id",
    "sender",
    "authenticated_data",
    "body_from_other",
    "drop_proposal",
    "dup_proposal",
    "reverse_proposals",
    "random_ref",
    "remove_by_value",
    "value_from_other",
    "drop_path",
    "path_from_other",
    "path_leaf_key",
    "path_node_key",
    "path_drop_node",
    "path_garble_secret",
)


def _edit(data, f: Feeder, steps: list[Step], content: FramedContent, op: str) -> FramedContent:
    body = content.content
    draw = data.draw
    if op == "epoch":
        return dataclasses.replace(
            content,
            epoch=draw(
                st.sampled_from((0, max(0, content.epoch - 1), content.epoch + 1, 2**64 - 1))
            ),
        )
    if op == "group_id":
        return dataclasses.replace(content, group_id=draw(st.binary(max_size=20)))
    if op == "sender":
        sender = draw(
            st.one_of(
                st.integers(0, 9).map(Sender.member),
                st.integers(0, 2).map(Sender.external),
                st.just(Sender.new_member_commit()),
                st.just(Sender.new_member_proposal()),
            )
        )
        return dataclasses.replace(content, sender=sender)
    if op == "authenticated_data":
        return dataclasses.replace(content, authenticated_data=draw(st.binary(max_size=40)))
    if op == "body_from_other":
        other = draw(st.sampled_from(steps)).decoded.content.content
        return dataclasses.replace(content, content=other)
    if not hasattr(body, "proposals"):  # the remaining edits are for commits
        return content
    props = list(body.proposals)
    path = body.path
    if op == "drop_proposal" and props:
        del props[draw(st.integers(0, len(props) - 1))]
    elif op == "dup_proposal" and props:
        props.append(draw(st.sampled_from(props)))
    elif op == "reverse_proposals":
        props.reverse()
    elif op == "random_ref":
        props.append(ProposalOrRef.by_reference(draw(st.binary(min_size=32, max_size=32))))
    elif op == "remove_by_value":
        props.append(ProposalOrRef.by_value(Remove(draw(st.integers(0, 9)))))
    elif op == "value_from_other":
        proposals = [s.decoded.content.content for s in steps if s.kind == "proposal"]
        props.append(ProposalOrRef.by_value(draw(st.sampled_from(proposals))))
    elif op == "drop_path":
        path = None
    elif op == "path_from_other":
        paths = [s.decoded.content.content.path for s in steps if s.kind == "commit"]
        path = draw(st.sampled_from(paths))
    elif path is not None and op == "path_leaf_key":
        # A fresh encryption key on the committer's leaf, validly re-signed: the parent
        # hash chain and key uniqueness must still be checked.
        leaf = dataclasses.replace(path.leaf_node, encryption_key=CS.generate_hpke_key_pair()[1])
        index = content.sender.index if content.sender.sender_type == SenderType.MEMBER else 0
        leaf = sign_leaf_node(CS, leaf, f.step.signer_key, content.group_id, index)
        path = dataclasses.replace(path, leaf_node=leaf)
    elif path is not None and path.nodes and op == "path_node_key":
        nodes = list(path.nodes)
        i = draw(st.integers(0, len(nodes) - 1))
        nodes[i] = dataclasses.replace(nodes[i], encryption_key=draw(st.binary(max_size=33)))
        path = dataclasses.replace(path, nodes=tuple(nodes))
    elif path is not None and path.nodes and op == "path_drop_node":
        path = dataclasses.replace(path, nodes=path.nodes[:-1])
    elif path is not None and path.nodes and op == "path_garble_secret":
        nodes = list(path.nodes)
        i = draw(st.integers(0, len(nodes) - 1))
        cts = list(nodes[i].encrypted_path_secret) or [HPKECiphertext(b"", b"")]
        cts[0] = HPKECiphertext(cts[0].kem_output, draw(st.binary(max_size=64)))
        nodes[i] = dataclasses.replace(nodes[i], encrypted_path_secret=tuple(cts))
        path = dataclasses.replace(path, nodes=tuple(nodes))
    return dataclasses.replace(
        content, content=dataclasses.replace(body, proposals=tuple(props), path=path)
    )


_HYPOTHESIS_STATS: Counter = Counter()


@pytest.fixture(scope="module")
def feeders(history: History) -> list[Feeder]:
    """One live observer per step (at that step's state), reused across examples."""
    out = []
    for step in history.steps:
        epoch = step.decoded.content.epoch
        same = [s for s in history.steps if s.decoded.content.epoch == epoch]
        out.append(Feeder(step, GroupObserver.from_bytes(step.before), same, _HYPOTHESIS_STATS))
    return out


@_budget(HYPOTHESIS_EXAMPLES)
@settings(
    max_examples=HYPOTHESIS_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hypothesis_structural_edits(history: History, feeders: list[Feeder], budget, data):
    f = feeders[data.draw(st.integers(0, len(feeders) - 1))]
    content = f.step.decoded.content
    for op in data.draw(st.lists(st.sampled_from(_OPS), min_size=1, max_size=3)):
        content = _edit(data, f, history.steps, content, op)
    resign = data.draw(st.booleans())
    witness = f.step.witness
    if resign:
        key = _membership_keys(witness) if witness is not None else None
        encoded = _sign_content(f, content, f.step.decoded.auth, key)
    else:
        encoded = _encode_or_none(dataclasses.replace(f.step.decoded, content=content))
    if encoded is None:
        return
    accepted = f.feed(encoded, resigned=resign)
    if resign and witness is not None:  # the member must agree (see MEMBER_ONLY)
        _check_agreement(witness, encoded, accepted, _HYPOTHESIS_AGREEMENT)


_HYPOTHESIS_AGREEMENT: Counter = Counter()


@cache
def _membership_keys(witness_state: bytes) -> bytes:
    return _membership_key(Group.from_bytes(witness_state))


def test_hypothesis_report_and_total_count(history: History):
    """Runs last in this file: prints the hypothesis counts and the grand total."""
    _report("hypothesis structural edits", _HYPOTHESIS_STATS)
    print(f"  agreement with a member: {dict(_HYPOTHESIS_AGREEMENT)}")
    total = sum(_TOTALS.values())
    print(f"observer fuzz total: {total} inputs ({_TOTALS})")
    if len(_TOTALS) == 7:  # the whole file ran (not a -k selection)
        assert total >= MIN_TOTAL
