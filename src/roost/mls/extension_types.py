"""Typed bodies of the RFC 9420 extensions (sections 5.3.3, 7.2, 11.1, 12.1.8.1, 12.4.3.2).

``Extension.extension_data`` holds the encoding of one of these bodies. Each body knows its
``extension_type``; ``to_extension()`` wraps it, ``from_extension()`` strictly unwraps it
(``DecodeError`` on a wrong type or malformed data). Type lists stay plain ints: they are
open registries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

from .codec import Reader, Struct, Writer
from .constants import ExtensionType
from .credential import Credential
from .errors import DecodeError
from .extensions import Extension
from .tree_nodes import Node, TreeEntry, read_ratchet_tree, write_ratchet_tree


class _ExtensionBody(Struct):
    __slots__ = ()
    extension_type: ClassVar[int]

    def to_extension(self) -> Extension:
        return Extension(self.extension_type, self.encode())

    @classmethod
    def from_extension(cls, ext: Extension) -> Self:
        if ext.extension_type != cls.extension_type:
            raise DecodeError(f"extension type {ext.extension_type} is not {cls.__name__}")
        return cls.decode(ext.extension_data)


@dataclass(frozen=True, slots=True)
class ApplicationId(_ExtensionBody):
    extension_type: ClassVar[int] = ExtensionType.APPLICATION_ID
    application_id: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.application_id)

    @classmethod
    def decode_from(cls, r: Reader) -> ApplicationId:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class RequiredCapabilities(_ExtensionBody):
    extension_type: ClassVar[int] = ExtensionType.REQUIRED_CAPABILITIES
    extension_types: tuple[int, ...] = ()
    proposal_types: tuple[int, ...] = ()
    credential_types: tuple[int, ...] = ()

    def encode_to(self, w: Writer) -> None:
        w.vector(self.extension_types, Writer.u16)
        w.vector(self.proposal_types, Writer.u16)
        w.vector(self.credential_types, Writer.u16)

    @classmethod
    def decode_from(cls, r: Reader) -> RequiredCapabilities:
        return cls(
            tuple(r.vector(Reader.u16)), tuple(r.vector(Reader.u16)), tuple(r.vector(Reader.u16))
        )


@dataclass(frozen=True, slots=True)
class ExternalPub(_ExtensionBody):
    extension_type: ClassVar[int] = ExtensionType.EXTERNAL_PUB
    external_pub: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.external_pub)

    @classmethod
    def decode_from(cls, r: Reader) -> ExternalPub:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class ExternalSender(Struct):
    signature_key: bytes
    credential: Credential

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.signature_key)
        self.credential.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> ExternalSender:
        return cls(r.opaque(), Credential.decode_from(r))


@dataclass(frozen=True, slots=True)
class ExternalSenders(_ExtensionBody):
    """``ExternalSender external_senders<V>``: Sender.sender_index indexes this list."""

    extension_type: ClassVar[int] = ExtensionType.EXTERNAL_SENDERS
    senders: tuple[ExternalSender, ...] = ()

    def encode_to(self, w: Writer) -> None:
        w.vector(self.senders, Struct.write)

    @classmethod
    def decode_from(cls, r: Reader) -> ExternalSenders:
        return cls(tuple(r.vector(ExternalSender.decode_from)))


@dataclass(frozen=True, slots=True)
class LastResort(_ExtensionBody):
    """Empty marker on a KeyPackage that may be handed out more than once."""

    extension_type: ClassVar[int] = ExtensionType.LAST_RESORT

    def encode_to(self, w: Writer) -> None:
        pass

    @classmethod
    def decode_from(cls, r: Reader) -> LastResort:
        return cls()


@dataclass(frozen=True, slots=True)
class RatchetTreeExtension(_ExtensionBody):
    """The ``ratchet_tree`` GroupInfo extension: the tree array, ``None`` for blanks."""

    extension_type: ClassVar[int] = ExtensionType.RATCHET_TREE
    nodes: tuple[Node | None, ...]

    @classmethod
    def of(cls, nodes: Sequence[TreeEntry]) -> RatchetTreeExtension:
        end = len(nodes)
        while end and nodes[end - 1] is None:  # senders drop trailing blanks (12.4.3.3)
            end -= 1
        return cls(tuple(None if n is None else Node.of(n) for n in nodes[:end]))

    def encode_to(self, w: Writer) -> None:
        write_ratchet_tree(w, self.nodes)

    @classmethod
    def decode_from(cls, r: Reader) -> RatchetTreeExtension:
        return cls(tuple(read_ratchet_tree(r)))
