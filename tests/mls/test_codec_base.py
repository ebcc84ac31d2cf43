"""Edge cases of the shared TLS codec base (roost.mls.codec, RFC 9420 section 2.1)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from roost.mls.codec import MAX_VARINT, Reader, Struct, Writer, encode_varint, enum_value, opaque
from roost.mls.constants import ContentType
from roost.mls.credential import Credential
from roost.mls.errors import DecodeError
from roost.mls.extensions import Extension, find_extension, read_extensions, write_extensions


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (0x3F, "3f"),
        (0x40, "4040"),
        (0x3FFF, "7fff"),
        (0x4000, "80004000"),
        (MAX_VARINT, "bfffffff"),
    ],
)
def test_varint_boundaries(value: int, encoded: str) -> None:
    assert encode_varint(value) == bytes.fromhex(encoded)
    r = Reader(bytes.fromhex(encoded))
    assert r.varint() == value
    r.finish()


@pytest.mark.parametrize("encoded", ["4000", "403f", "80000000", "80003fff"])
def test_varint_rejects_non_minimal(encoded: str) -> None:
    with pytest.raises(DecodeError, match="non-minimal"):
        Reader(bytes.fromhex(encoded)).varint()


@pytest.mark.parametrize("encoded", ["c0", "c000000000000000", "ff"])
def test_varint_rejects_64_bit_prefix(encoded: str) -> None:
    with pytest.raises(DecodeError, match="prefix"):
        Reader(bytes.fromhex(encoded)).varint()


@pytest.mark.parametrize("encoded", ["", "40", "8000", "800040"])
def test_varint_truncated(encoded: str) -> None:
    with pytest.raises(DecodeError, match="truncated"):
        Reader(bytes.fromhex(encoded)).varint()


def test_varint_encode_out_of_range() -> None:
    with pytest.raises(ValueError):
        encode_varint(MAX_VARINT + 1)


def test_fixed_width_integers() -> None:
    w = Writer()
    w.u8(0xAB)
    w.u16(0xBEEF)
    w.u32(0xDEADBEEF)
    w.u64(0x0123456789ABCDEF)
    r = Reader(w.getvalue())
    assert (r.u8(), r.u16(), r.u32(), r.u64()) == (0xAB, 0xBEEF, 0xDEADBEEF, 0x0123456789ABCDEF)
    r.finish()
    for n, read in ((0, Reader.u8), (1, Reader.u16), (3, Reader.u32), (7, Reader.u64)):
        with pytest.raises(DecodeError, match="truncated"):
            read(Reader(b"\x00" * n))


def test_opaque_length_beyond_buffer() -> None:
    with pytest.raises(DecodeError, match="truncated"):
        Reader(b"\x05abcd").opaque()
    assert opaque(b"abc") == b"\x03abc"


def test_reader_respects_end_bound() -> None:
    # A sub-reader must not read past its own end even if the buffer goes on.
    r = Reader(b"\x02ab\x01c", 0, 2)
    with pytest.raises(DecodeError):
        r.opaque()


def test_boolean_and_optional_presence() -> None:
    assert Reader(b"\x00").boolean() is False
    assert Reader(b"\x01").boolean() is True
    with pytest.raises(DecodeError, match="boolean"):
        Reader(b"\x02").boolean()
    assert Reader(b"\x00").optional(Reader.u8) is None
    assert Reader(b"\x01\x07").optional(Reader.u8) == 7
    with pytest.raises(DecodeError, match="presence"):
        Reader(b"\x02\x07").optional(Reader.u8)
    w = Writer()
    w.optional(None, Writer.u8)
    w.optional(9, Writer.u8)
    w.boolean(True)
    assert w.getvalue() == b"\x00\x01\x09\x01"


def test_vector_items_must_fill_length_exactly() -> None:
    assert Reader(b"\x04\x00\x01\x00\x02").vector(Reader.u16) == [1, 2]
    assert Reader(b"\x00").vector(Reader.u16) == []
    with pytest.raises(DecodeError, match="truncated"):
        Reader(b"\x03\x00\x01\x00").vector(Reader.u16)  # last item overruns the vector
    with pytest.raises(DecodeError, match="truncated vector"):
        Reader(b"\x06\x00\x01").vector(Reader.u16)
    w = Writer()
    w.vector([1, 2], Writer.u16)
    assert w.getvalue() == b"\x04\x00\x01\x00\x02"


def test_finish_rejects_trailing_bytes() -> None:
    r = Reader(b"\x01\x02")
    r.u8()
    with pytest.raises(DecodeError, match="1 trailing"):
        r.finish()


@dataclass(frozen=True, slots=True)
class _Leaky(Struct):
    """A decoder that lets a stray ValueError escape: Struct.decode must convert it."""

    value: int

    def encode_to(self, w: Writer) -> None:
        w.u8(self.value)

    @classmethod
    def decode_from(cls, r: Reader) -> _Leaky:
        v = r.u8()
        if v == 0xFF:
            raise ValueError("boom")
        if v == 0xFE:
            raise KeyError("boom")
        return cls(v)


def test_struct_decode_converts_stray_errors_and_rejects_trailing() -> None:
    assert _Leaky.decode(b"\x05") == _Leaky(5)
    for bad in (b"\xff", b"\xfe"):
        with pytest.raises(DecodeError, match="invalid _Leaky"):
            _Leaky.decode(bad)
    with pytest.raises(DecodeError, match="trailing"):
        _Leaky.decode(b"\x05\x00")
    with pytest.raises(DecodeError):
        _Leaky.decode(b"")


def test_reader_accepts_bytearray_and_memoryview() -> None:
    assert _Leaky.decode(bytearray(b"\x05")) == _Leaky(5)
    assert _Leaky.decode(memoryview(b"\x05")) == _Leaky(5)


def test_enum_value() -> None:
    assert enum_value(ContentType, 3, "content type") is ContentType.COMMIT
    with pytest.raises(DecodeError, match="unknown content type 9"):
        enum_value(ContentType, 9, "content type")


def test_credentials() -> None:
    for cred in (Credential.basic(b"alice"), Credential.x509([b"leaf", b"ca"])):
        assert Credential.decode(cred.encode()) == cred
    with pytest.raises(DecodeError, match="no certificates"):
        Credential.decode(b"\x00\x02\x00")
    with pytest.raises(DecodeError, match="credential type"):
        Credential.decode(b"\x00\x03\x00")


def test_extensions_list() -> None:
    exts = (Extension(1, b"a"), Extension(0xFAFA, b""))  # unknown types are kept as ints
    w = Writer()
    write_extensions(w, exts)
    r = Reader(w.getvalue())
    assert read_extensions(r) == exts
    r.finish()
    assert find_extension(exts, 0xFAFA) == exts[1]
    assert find_extension(exts, 2) is None
    w = Writer()
    write_extensions(w, (Extension(1, b"a"), Extension(1, b"b")))
    with pytest.raises(DecodeError, match="duplicate"):
        read_extensions(Reader(w.getvalue()))
