"""Extension (RFC 9420 section 13.4) and the typed extension bodies."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Struct, Writer
from .errors import DecodeError


@dataclass(frozen=True, slots=True)
class Extension(Struct):
    extension_type: int
    extension_data: bytes

    def encode_to(self, w: Writer) -> None:
        w.u16(self.extension_type)
        w.opaque(self.extension_data)

    @classmethod
    def decode_from(cls, r: Reader) -> Extension:
        return cls(r.u16(), r.opaque())


def write_extensions(w: Writer, exts: tuple[Extension, ...]) -> None:
    w.vector(exts, Struct.write)


def read_extensions(r: Reader) -> tuple[Extension, ...]:
    """A list of extensions; RFC 9420 section 13.4 forbids duplicate types."""
    if r.pos < r.end and r.data[r.pos] == 0:  # the common empty list: one byte
        r.pos += 1
        return ()
    exts = tuple(r.vector(Extension.decode_from))
    if len(exts) > 1 and len({e.extension_type for e in exts}) != len(exts):
        raise DecodeError("duplicate extension type")
    return exts


def find_extension(exts: tuple[Extension, ...], extension_type: int) -> Extension | None:
    for e in exts:
        if e.extension_type == extension_type:
            return e
    return None
