"""Proposals (RFC 9420 section 12.1) and ProposalOrRef (section 12.4).

Each body (Add, Update, ...) is its own Struct; ``Proposal`` is the tagged union that puts the
``ProposalType`` in front. Proposal types outside RFC 9420 cannot be decoded (the body has no
length prefix), so an unknown type is a ``DecodeError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .codec import Reader, Struct, Writer
from .constants import ProposalOrRefType, ProposalType
from .errors import DecodeError
from .extensions import Extension, read_extensions, write_extensions
from .key_package import KeyPackage
from .leaf_node import LeafNode
from .psk import PreSharedKeyID


@dataclass(frozen=True, slots=True)
class Add(Struct):
    proposal_type: ClassVar[ProposalType] = ProposalType.ADD
    key_package: KeyPackage

    def encode_to(self, w: Writer) -> None:
        self.key_package.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> Add:
        return cls(KeyPackage.decode_from(r))


@dataclass(frozen=True, slots=True)
class Update(Struct):
    proposal_type: ClassVar[ProposalType] = ProposalType.UPDATE
    leaf_node: LeafNode

    def encode_to(self, w: Writer) -> None:
        self.leaf_node.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> Update:
        return cls(LeafNode.decode_from(r))


@dataclass(frozen=True, slots=True)
class Remove(Struct):
    proposal_type: ClassVar[ProposalType] = ProposalType.REMOVE
    removed: int  # leaf index

    def encode_to(self, w: Writer) -> None:
        w.u32(self.removed)

    @classmethod
    def decode_from(cls, r: Reader) -> Remove:
        return cls(r.u32())


@dataclass(frozen=True, slots=True)
class PreSharedKey(Struct):
    proposal_type: ClassVar[ProposalType] = ProposalType.PSK
    psk: PreSharedKeyID

    def encode_to(self, w: Writer) -> None:
        self.psk.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> PreSharedKey:
        return cls(PreSharedKeyID.decode_from(r))


@dataclass(frozen=True, slots=True)
class ReInit(Struct):
    proposal_type: ClassVar[ProposalType] = ProposalType.REINIT
    group_id: bytes
    version: int
    cipher_suite: int
    extensions: tuple[Extension, ...] = ()

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.u16(self.version)
        w.u16(self.cipher_suite)
        write_extensions(w, self.extensions)

    @classmethod
    def decode_from(cls, r: Reader) -> ReInit:
        return cls(r.opaque(), r.u16(), r.u16(), read_extensions(r))


@dataclass(frozen=True, slots=True)
class ExternalInit(Struct):
    proposal_type: ClassVar[ProposalType] = ProposalType.EXTERNAL_INIT
    kem_output: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.kem_output)

    @classmethod
    def decode_from(cls, r: Reader) -> ExternalInit:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class GroupContextExtensions(Struct):
    proposal_type: ClassVar[ProposalType] = ProposalType.GROUP_CONTEXT_EXTENSIONS
    extensions: tuple[Extension, ...] = ()

    def encode_to(self, w: Writer) -> None:
        write_extensions(w, self.extensions)

    @classmethod
    def decode_from(cls, r: Reader) -> GroupContextExtensions:
        return cls(read_extensions(r))


ProposalBody = Add | Update | Remove | PreSharedKey | ReInit | ExternalInit | GroupContextExtensions

PROPOSAL_BODIES: dict[int, type[ProposalBody]] = {
    int(c.proposal_type): c
    for c in (Add, Update, Remove, PreSharedKey, ReInit, ExternalInit, GroupContextExtensions)
}


@dataclass(frozen=True, slots=True)
class Proposal(Struct):
    """``Proposal``: the type tag is taken from the body's class."""

    body: ProposalBody

    @property
    def proposal_type(self) -> ProposalType:
        return self.body.proposal_type

    def encode_to(self, w: Writer) -> None:
        w.u16(self.body.proposal_type)
        self.body.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> Proposal:
        t = r.u16()
        body_cls = PROPOSAL_BODIES.get(t)
        if body_cls is None:
            raise DecodeError(f"unknown proposal type {t}")
        return cls(body_cls.decode_from(r))


@dataclass(frozen=True, slots=True)
class ProposalOrRef(Struct):
    """``ProposalOrRef``: exactly one of ``proposal`` / ``reference`` is set."""

    proposal: Proposal | None = None
    reference: bytes | None = None  # ProposalRef = opaque HashReference<V>

    @property
    def type(self) -> ProposalOrRefType:
        return (
            ProposalOrRefType.PROPOSAL if self.proposal is not None else ProposalOrRefType.REFERENCE
        )

    @classmethod
    def by_value(cls, proposal: Proposal | ProposalBody) -> ProposalOrRef:
        return cls(proposal=proposal if isinstance(proposal, Proposal) else Proposal(proposal))

    @classmethod
    def by_reference(cls, ref: bytes) -> ProposalOrRef:
        return cls(reference=ref)

    def encode_to(self, w: Writer) -> None:
        if self.proposal is not None and self.reference is None:
            w.u8(ProposalOrRefType.PROPOSAL)
            self.proposal.encode_to(w)
        elif self.reference is not None and self.proposal is None:
            w.u8(ProposalOrRefType.REFERENCE)
            w.opaque(self.reference)
        else:
            raise ValueError("ProposalOrRef needs exactly one of proposal / reference")

    @classmethod
    def decode_from(cls, r: Reader) -> ProposalOrRef:
        t = r.u8()
        if t == ProposalOrRefType.PROPOSAL:
            return cls(proposal=Proposal.decode_from(r))
        if t == ProposalOrRefType.REFERENCE:
            return cls(reference=r.opaque())
        raise DecodeError(f"unknown ProposalOrRef type {t}")
