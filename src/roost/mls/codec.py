"""TLS presentation language codec as used by RFC 9420 (section 2.1).

``Reader`` decodes strictly: minimal variable-length integers, exact lengths, no trailing
bytes (``Reader.finish``). Every failure raises ``DecodeError`` and nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, ClassVar, Self, TypeVar

from .errors import DecodeError

T = TypeVar("T")

MAX_VARINT = (1 << 30) - 1


class Reader:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None):
        self.data = bytes(data) if not isinstance(data, bytes) else data
        self.pos = pos
        self.end = len(self.data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def _take(self, n: int) -> bytes:
        p = self.pos
        if n < 0 or p + n > self.end:
            raise DecodeError(f"truncated: need {n} bytes at offset {p}, have {self.end - p}")
        self.pos = p + n
        return self.data[p : p + n]

    def fixed(self, n: int) -> bytes:
        return self._take(n)

    def u8(self) -> int:
        p = self.pos
        if p >= self.end:
            raise DecodeError(f"truncated: need 1 byte at offset {p}")
        self.pos = p + 1
        return self.data[p]

    def u16(self) -> int:
        return int.from_bytes(self._take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self._take(8), "big")

    def varint(self) -> int:
        """RFC 9420 section 2.1.2: QUIC-style varint limited to 30 bits, minimal encoding."""
        first = self.u8()
        prefix = first >> 6
        if prefix == 0:
            return first
        if prefix == 1:
            v = ((first & 0x3F) << 8) | self.u8()
            if v < 0x40:
                raise DecodeError("non-minimal varint")
            return v
        if prefix == 2:
            rest = self._take(3)
            v = ((first & 0x3F) << 24) | int.from_bytes(rest, "big")
            if v < 0x4000:
                raise DecodeError("non-minimal varint")
            return v
        raise DecodeError("invalid varint prefix 0b11")

    def opaque(self) -> bytes:
        """``opaque data<V>``: varint length followed by that many bytes."""
        # Hot: every key, signature and nested vector. Inline the one-byte length case.
        # Hot: every key, signature and nested vector. Inline the one- and two-byte length
        # cases (keys, signatures); longer ones go through varint().
        p, data = self.pos, self.data
        if p < self.end:
            first = data[p]
            if first < 0x40:
                p += 1
                n = first
            elif first < 0x80 and p + 1 < self.end:
                n = ((first & 0x3F) << 8) | data[p + 1]
                if n < 0x40:
                    raise DecodeError("non-minimal varint")
                p += 2
            else:
                return self._take(self.varint())
            q = p + n
            if q > self.end:
                raise DecodeError(f"truncated: need {n} bytes at offset {p}")
            self.pos = q
            return data[p:q]
        return self._take(self.varint())

    def boolean(self) -> bool:
        v = self.u8()
        if v > 1:
            raise DecodeError(f"invalid boolean {v}")
        return v == 1

    def optional(self, item: Callable[[Reader], T]) -> T | None:
        present = self.u8()
        if present == 0:
            return None
        if present != 1:
            raise DecodeError(f"invalid optional presence byte {present}")
        return item(self)

    def vector(self, item: Callable[[Reader], T]) -> list[T]:
        """``T items<V>``: varint byte length, then items that exactly fill it."""
        length = self.varint()
        end = self.pos + length
        if end > self.end:
            raise DecodeError(f"truncated vector: length {length} at offset {self.pos}")
        sub = Reader(self.data, self.pos, end)
        out: list[T] = []
        while sub.pos < end:
            out.append(item(sub))
        self.pos = end
        return out

    def finish(self) -> None:
        if self.pos != self.end:
            raise DecodeError(f"{self.end - self.pos} trailing bytes")


def unpack_u16s(raw: bytes) -> tuple[int, ...]:
    """The uint16 values of ``raw`` (even length, checked by the caller)."""
    n = len(raw) >> 1
    fmt = _U16_FORMATS.get(n)
    if fmt is None:
        fmt = struct.Struct(f">{n}H")
        if n < 64:
            _U16_FORMATS[n] = fmt
    return fmt.unpack(raw)


_U16_FORMATS: dict[int, struct.Struct] = {}


class Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def fixed(self, b: bytes) -> None:
        self.buf += b

    def u8(self, v: int) -> None:
        self.buf.append(v)

    def u16(self, v: int) -> None:
        self.buf += v.to_bytes(2, "big")

    def u32(self, v: int) -> None:
        self.buf += v.to_bytes(4, "big")

    def u64(self, v: int) -> None:
        self.buf += v.to_bytes(8, "big")

    def varint(self, v: int) -> None:
        self.buf += encode_varint(v)

    def opaque(self, b: bytes) -> None:
        self.buf += encode_varint(len(b))
        self.buf += b

    def boolean(self, v: bool) -> None:
        self.buf.append(1 if v else 0)

    def optional(self, value: T | None, item: Callable[[Writer, T], None]) -> None:
        if value is None:
            self.buf.append(0)
        else:
            self.buf.append(1)
            item(self, value)

    def vector(self, items: Iterable[T], item: Callable[[Writer, T], None]) -> None:
        inner = Writer()
        for it in items:
            item(inner, it)
        self.opaque(bytes(inner.buf))

    def getvalue(self) -> bytes:
        return bytes(self.buf)


def encode_varint(v: int) -> bytes:
    if v < 0x40:
        return bytes((v,))
    if v < 0x4000:
        return (v | 0x4000).to_bytes(2, "big")
    if v <= MAX_VARINT:
        return (v | 0x80000000).to_bytes(4, "big")
    raise ValueError(f"varint out of range: {v}")


def opaque(b: bytes) -> bytes:
    """Encode ``opaque<V>`` on its own (length prefix + bytes)."""
    return encode_varint(len(b)) + b


class Struct:
    """Mixin for wire structures: subclasses implement ``encode_to`` and ``decode_from``.

    ``decode`` reads a whole buffer and rejects trailing bytes; ``encode`` returns bytes.
    Any exception other than ``DecodeError`` escaping a decoder is a bug, and is converted
    here so that callers only ever see the documented error type.
    """

    __slots__ = ()
    wire_name: ClassVar[str] = ""

    def encode_to(self, w: Writer) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def decode_from(cls, r: Reader) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self) -> bytes:
        w = Writer()
        self.encode_to(w)
        return bytes(w.buf)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        try:
            value = cls.decode_from(r)
        except DecodeError:
            raise
        except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:
            raise DecodeError(f"invalid {cls.__name__}: {e}") from None
        r.finish()
        return value

    @staticmethod
    def write(w: Writer, value: Any) -> None:
        value.encode_to(w)


class Memoized(Struct):
    """A ``Struct`` that keeps its (partial) encoding once computed or decoded.

    Only for frozen structures: their encoding can never change, so signatures, hashes and
    references over them need not re-encode (the hot paths verify and hash the very
    structures they just decoded). The memo lives in a slot that is not a dataclass field:
    it takes no part in ``==``, ``repr`` or ``dataclasses.replace`` (a replaced copy starts
    without one). Read it with ``_memo_of``; set it with ``_set_memo``.
    """

    __slots__ = ("_memo",)
    _memo: bytes  # unset until computed or decoded


def _memo_of(obj: Memoized) -> bytes | None:
    try:
        return obj._memo
    except AttributeError:
        return None


def _set_memo(obj: Memoized, value: bytes) -> None:
    object.__setattr__(obj, "_memo", value)  # frozen dataclasses refuse plain assignment


def enum_value(enum_cls: type[Enum], value: int, what: str) -> Any:
    """Convert an integer to a member of ``enum_cls`` or raise ``DecodeError``."""
    # A dict lookup instead of EnumMeta.__call__ (several microseconds per decoded field).
    member = enum_cls._value2member_map_.get(value)
    if member is None:
        raise DecodeError(f"unknown {what} {value}")
    return member
