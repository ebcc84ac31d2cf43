"""Strict, versioned binary encoding of a member's whole ``Group`` state (no pickle).

Layout: magic "RMLSG", u16 version, then the current epoch, the optional pending commit,
the past epochs kept for late application messages, the proposal cache, our pending Update
keys, resumption and external PSKs, and flags. The result holds every secret of the group:
store it encrypted at rest.

The secret tree is written with its ratchet positions and skipped keys so that a restored
member neither reuses a generation nor accepts a replayed one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..codec import Reader, Writer
from ..constants import WireFormat
from ..crypto import CipherSuite
from ..crypto.ciphersuite import get_cipher_suite
from ..errors import DecodeError
from ..key_schedule import EpochSecrets
from ..proposals import Proposal, ReInit
from ..secret_tree import HashRatchet, SecretTree
from ..treekem import TreePrivateState
from .epoch_state import EpochState
from .observer import _read_queued, _write_queued
from .proposal_rules import QueuedProposal
from .state import PublicState
from .validation import CredentialPolicy

if TYPE_CHECKING:  # member.py imports this module lazily, from Group.to_bytes / from_bytes
    from .member import Group

MAGIC = b"RMLSG"
VERSION = 2  # 1: at most one past epoch (an optional)
_SECRET_FIELDS = EpochSecrets.__dataclass_fields__.keys()


def _write_map(w: Writer, items: dict[int, bytes]) -> None:
    w.u32(len(items))
    for k in sorted(items):
        w.u64(k)
        w.opaque(items[k])


def _read_map(r: Reader) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for _ in range(r.u32()):
        k = r.u64()
        out[k] = r.opaque()
    return out


def _write_bytes_map(w: Writer, items: dict[bytes, bytes]) -> None:
    w.u32(len(items))
    for k in sorted(items):
        w.opaque(k)
        w.opaque(items[k])


def _read_bytes_map(r: Reader) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for _ in range(r.u32()):
        k = r.opaque()
        out[k] = r.opaque()
    return out


# --- secret tree (reads the ratchets' internal fields: the module has no codec of its own) ---


def _write_ratchet(w: Writer, rt: HashRatchet) -> None:
    w.optional(rt._secret, Writer.opaque)
    w.u32(rt.next_generation)
    w.u32(rt._window)
    w.u32(len(rt._skipped))
    for gen, (key, nonce) in rt._skipped.items():
        w.u32(gen)
        w.opaque(key)
        w.opaque(nonce)


def _read_ratchet(r: Reader, cs: CipherSuite) -> HashRatchet:
    secret = r.optional(Reader.opaque)
    rt = HashRatchet(cs, b"", 1)
    rt._secret = secret
    rt.next_generation = r.u32()
    rt._window = r.u32()
    for _ in range(r.u32()):
        gen = r.u32()
        rt._skipped[gen] = (r.opaque(), r.opaque())
    return rt


def _write_secret_tree(w: Writer, st: SecretTree) -> None:
    w.u32(st.n_leaves)
    w.u32(st._window)
    _write_map(w, st._nodes)
    for ratchets in (st._handshake, st._application):
        w.u32(len(ratchets))
        for leaf in sorted(ratchets):
            w.u32(leaf)
            _write_ratchet(w, ratchets[leaf])


def _read_secret_tree(r: Reader, cs: CipherSuite) -> SecretTree:
    n_leaves = r.u32()
    window = r.u32()
    st = SecretTree(cs, b"\0", n_leaves, window)
    st._nodes = _read_map(r)
    for ratchets in (st._handshake, st._application):
        for _ in range(r.u32()):
            leaf = r.u32()
            ratchets[leaf] = _read_ratchet(r, cs)
    return st


# --- epochs -----------------------------------------------------------------------------------


def _write_epoch(w: Writer, e: EpochState) -> None:
    e.public.encode_to(w)
    w.u32(e.leaf_index)
    for name in _SECRET_FIELDS:
        w.opaque(getattr(e.secrets, name))
    keys = e.tree_keys
    w.u32(len(keys.keys))
    for x in sorted(keys.keys):
        priv, pub = keys.keys[x]
        w.u32(x)
        w.opaque(priv)
        w.opaque(pub)
    _write_map(w, keys.path_secrets)
    _write_secret_tree(w, e.secret_tree)


def _read_epoch(r: Reader) -> EpochState:
    public = PublicState.decode_from(r, get_cipher_suite)
    cs = public.cs
    leaf_index = r.u32()
    secrets = EpochSecrets(**{name: r.opaque() for name in _SECRET_FIELDS})
    keys = TreePrivateState(leaf_index)
    for _ in range(r.u32()):
        x = r.u32()
        keys.keys[x] = (r.opaque(), r.opaque())
    keys.path_secrets = _read_map(r)
    secret_tree = _read_secret_tree(r, cs)
    return EpochState(public, secrets, keys, secret_tree, leaf_index)


def _write_reinit(w: Writer, body: ReInit) -> None:
    Proposal(body).encode_to(w)


def _write_pending(w: Writer, pending: tuple[EpochState, bytes, ReInit | None]) -> None:
    nxt, commit, reinit = pending
    _write_epoch(w, nxt)
    w.opaque(commit)
    w.optional(reinit, _write_reinit)


def _read_reinit(r: Reader) -> ReInit:
    body = Proposal.decode_from(r).body
    if not isinstance(body, ReInit):
        raise DecodeError("saved ReInit is another proposal type")
    return body


def encode_group(group: Group) -> bytes:
    w = Writer()
    w.fixed(MAGIC)
    w.u16(VERSION)
    _write_epoch(w, group._epoch)
    w.optional(group._pending, _write_pending)
    w.u8(len(group._past))
    for past in group._past:
        _write_epoch(w, past)
    w.u32(len(group._proposals))
    for q in group._proposals.values():
        _write_queued(w, q)
    _write_bytes_map(w, group._update_keys)
    _write_map(w, group._resumption)
    _write_bytes_map(w, group.external_psks)
    w.opaque(group._sig_priv)
    w.boolean(group.active)
    w.optional(group.reinit, _write_reinit)
    w.u16(group.handshake_wire_format)
    return w.getvalue()


def decode_group(
    cls: type[Group], data: bytes, credential_policy: CredentialPolicy | None
) -> Group:
    r = Reader(data)
    try:
        if r.fixed(len(MAGIC)) != MAGIC:
            raise DecodeError("not a serialised Group")
        version = r.u16()
        if version not in (1, VERSION):
            raise DecodeError(f"unsupported group state version {version}")
        epoch = _read_epoch(r)
        pending = r.optional(lambda r: (_read_epoch(r), r.opaque(), r.optional(_read_reinit)))
        # Version 1 kept one optional past epoch: its presence byte reads as a count of 0 or 1.
        count = r.u8()
        if version == 1 and count > 1:
            raise DecodeError(f"invalid optional presence byte {count}")
        past = [_read_epoch(r) for _ in range(count)]
        proposals: dict[bytes, QueuedProposal] = {}
        for _ in range(r.u32()):
            q = _read_queued(r)
            if q.ref is None:  # only received proposals are cached, each under its ref
                raise DecodeError("saved proposal without a ProposalRef")
            proposals[q.ref] = q
        update_keys = _read_bytes_map(r)
        resumption = _read_map(r)
        external = _read_bytes_map(r)
        sig_priv = r.opaque()
        active = r.boolean()
        reinit = r.optional(_read_reinit)
        wire_format = WireFormat(r.u16())
        r.finish()
    except DecodeError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:
        raise DecodeError(f"invalid group state: {e}") from None
    group = cls(
        epoch,
        sig_priv,
        credential_policy=credential_policy,
        external_psks=external,
        resumption_psks=resumption,
        handshake_wire_format=wire_format,
    )
    group._pending = pending
    group._past = past
    group._proposals = proposals
    group._update_keys = update_keys
    group.active = active
    group.reinit = reinit
    return group
