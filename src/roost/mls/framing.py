"""Message framing (RFC 9420 section 6) and the MLSMessage envelope.

Content bodies are typed by their Python class: ``bytes`` is application data, ``Proposal``
a proposal, ``Commit`` a commit; ``content_type`` is derived from that so the two can never
disagree. Fields whose presence depends on another field (confirmation_tag, membership_tag,
the sender index) are ``None`` exactly when the RFC's select leaves them out; decoders enforce
that, encoders refuse inconsistent values with ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Memoized, Reader, Struct, Writer, _memo_of, _set_memo, enum_value
from .commit import Commit
from .constants import ContentType, ProtocolVersion, SenderType, WireFormat
from .errors import DecodeError
from .group_context import GroupContext
from .group_info import GroupInfo
from .key_package import KeyPackage
from .proposals import Proposal
from .welcome import Welcome

ContentBody = bytes | Proposal | Commit

# Sender types whose FramedContentTBS binds the GroupContext (section 6.1).
_SENDERS_WITH_CONTEXT = frozenset({SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT})


def content_type_of(body: ContentBody) -> ContentType:
    if isinstance(body, bytes):
        return ContentType.APPLICATION
    if isinstance(body, Proposal):
        return ContentType.PROPOSAL
    if isinstance(body, Commit):
        return ContentType.COMMIT
    raise TypeError(f"not a content body: {type(body).__name__}")


def _write_body(w: Writer, body: ContentBody) -> None:
    if isinstance(body, bytes):
        w.opaque(body)
    else:
        body.encode_to(w)


def _read_body(r: Reader, content_type: ContentType) -> ContentBody:
    if content_type == ContentType.APPLICATION:
        return r.opaque()
    if content_type == ContentType.PROPOSAL:
        return Proposal.decode_from(r)
    return Commit.decode_from(r)


def _read_content_type(r: Reader) -> ContentType:
    return enum_value(ContentType, r.u8(), "content type")


@dataclass(frozen=True, slots=True)
class Sender(Struct):
    sender_type: SenderType
    # leaf_index for member, sender_index (into external_senders) for external, else None.
    index: int | None = None

    @classmethod
    def member(cls, leaf_index: int) -> Sender:
        return cls(SenderType.MEMBER, leaf_index)

    @classmethod
    def external(cls, sender_index: int) -> Sender:
        return cls(SenderType.EXTERNAL, sender_index)

    @classmethod
    def new_member_proposal(cls) -> Sender:
        return cls(SenderType.NEW_MEMBER_PROPOSAL)

    @classmethod
    def new_member_commit(cls) -> Sender:
        return cls(SenderType.NEW_MEMBER_COMMIT)

    @property
    def leaf_index(self) -> int:
        if self.sender_type != SenderType.MEMBER or self.index is None:
            raise ValueError(f"{self.sender_type.name} sender has no leaf index")
        return self.index

    @property
    def sender_index(self) -> int:
        if self.sender_type != SenderType.EXTERNAL or self.index is None:
            raise ValueError(f"{self.sender_type.name} sender has no external sender index")
        return self.index

    def encode_to(self, w: Writer) -> None:
        w.u8(self.sender_type)
        has_index = self.sender_type in (SenderType.MEMBER, SenderType.EXTERNAL)
        if has_index != (self.index is not None):
            raise ValueError(f"index {self.index!r} does not fit a {self.sender_type!r} sender")
        if self.index is not None:
            w.u32(self.index)

    @classmethod
    def decode_from(cls, r: Reader) -> Sender:
        t = enum_value(SenderType, r.u8(), "sender type")
        if t == SenderType.MEMBER or t == SenderType.EXTERNAL:
            return cls(t, r.u32())
        return cls(t)


@dataclass(frozen=True, slots=True)
class FramedContent(Memoized):
    """The memo holds the encoding: a received message's FramedContentTBS, membership tag
    input, transcript hash input and ProposalRef all reuse the decoded bytes."""

    group_id: bytes
    epoch: int
    sender: Sender
    authenticated_data: bytes
    content: ContentBody

    @property
    def content_type(self) -> ContentType:
        return content_type_of(self.content)

    def encode_to(self, w: Writer) -> None:
        raw = _memo_of(self)
        if raw is None:
            inner = Writer()
            inner.opaque(self.group_id)
            inner.u64(self.epoch)
            self.sender.encode_to(inner)
            inner.opaque(self.authenticated_data)
            inner.u8(content_type_of(self.content))
            _write_body(inner, self.content)
            raw = bytes(inner.buf)
            _set_memo(self, raw)
        w.fixed(raw)

    @classmethod
    def decode_from(cls, r: Reader) -> FramedContent:
        start = r.pos
        group_id = r.opaque()
        epoch = r.u64()
        sender = Sender.decode_from(r)
        authenticated_data = r.opaque()
        body = _read_body(r, _read_content_type(r))
        content = cls(group_id, epoch, sender, authenticated_data, body)
        _set_memo(content, r.data[start : r.pos])  # canonical: equal to re-encoding
        return content


@dataclass(frozen=True, slots=True)
class FramedContentAuthData(Struct):
    signature: bytes
    confirmation_tag: bytes | None = None  # present exactly for commits

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.signature)
        if self.confirmation_tag is not None:
            w.opaque(self.confirmation_tag)

    def check_fits(self, content_type: ContentType) -> None:
        if (content_type == ContentType.COMMIT) != (self.confirmation_tag is not None):
            raise ValueError(f"confirmation_tag must be set exactly for commits ({content_type!r})")

    @classmethod
    def read(cls, r: Reader, content_type: ContentType) -> FramedContentAuthData:
        signature = r.opaque()
        if content_type == ContentType.COMMIT:
            return cls(signature, r.opaque())
        return cls(signature)

    @classmethod
    def decode_from(cls, r: Reader) -> FramedContentAuthData:
        raise DecodeError("FramedContentAuthData needs its content type: use read(r, type)")


def _context_bytes(group_context: GroupContext | bytes | None) -> bytes | None:
    if group_context is None or isinstance(group_context, bytes):
        return group_context
    return group_context.encode()


def write_framed_content_tbs(
    w: Writer,
    wire_format: WireFormat,
    content: FramedContent,
    group_context: GroupContext | bytes | None,
) -> None:
    w.u16(ProtocolVersion.MLS10)
    w.u16(wire_format)
    content.encode_to(w)
    if content.sender.sender_type in _SENDERS_WITH_CONTEXT:
        ctx = _context_bytes(group_context)
        if ctx is None:
            raise ValueError(f"{content.sender.sender_type!r} sender: TBS needs the GroupContext")
        w.fixed(ctx)


def framed_content_tbs(
    wire_format: WireFormat,
    content: FramedContent,
    group_context: GroupContext | bytes | None,
) -> bytes:
    """FramedContentTBS bytes (signed with label "FramedContentTBS").

    ``group_context`` (a GroupContext or its encoding) is bound only for member and
    new_member_commit senders; for other senders it is ignored and may be None.
    """
    w = Writer()
    write_framed_content_tbs(w, wire_format, content, group_context)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class AuthenticatedContent(Struct):
    wire_format: WireFormat
    content: FramedContent
    auth: FramedContentAuthData

    def tbs(self, group_context: GroupContext | bytes | None) -> bytes:
        return framed_content_tbs(self.wire_format, self.content, group_context)

    def tbm(self, group_context: GroupContext | bytes | None) -> bytes:
        """AuthenticatedContentTBM = FramedContentTBS || auth: input of the membership tag."""
        w = Writer()
        write_framed_content_tbs(w, self.wire_format, self.content, group_context)
        self.auth.encode_to(w)
        return w.getvalue()

    def confirmed_transcript_hash_input(self) -> bytes:
        """ConfirmedTranscriptHashInput (section 8.2): wire_format, content, signature."""
        w = Writer()
        w.u16(self.wire_format)
        self.content.encode_to(w)
        w.opaque(self.auth.signature)
        return w.getvalue()

    def encode_to(self, w: Writer) -> None:
        self.auth.check_fits(self.content.content_type)
        w.u16(self.wire_format)
        self.content.encode_to(w)
        self.auth.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> AuthenticatedContent:
        wire_format = enum_value(WireFormat, r.u16(), "wire format")
        content = FramedContent.decode_from(r)
        return cls(wire_format, content, FramedContentAuthData.read(r, content.content_type))


@dataclass(frozen=True, slots=True)
class PublicMessage(Struct):
    content: FramedContent
    auth: FramedContentAuthData
    membership_tag: bytes | None = None  # present exactly for member senders

    @classmethod
    def from_authenticated(
        cls, ac: AuthenticatedContent, membership_tag: bytes | None = None
    ) -> PublicMessage:
        return cls(ac.content, ac.auth, membership_tag)

    def authenticated_content(self) -> AuthenticatedContent:
        return AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, self.content, self.auth)

    def encode_to(self, w: Writer) -> None:
        self.auth.check_fits(self.content.content_type)
        is_member = self.content.sender.sender_type == SenderType.MEMBER
        if is_member != (self.membership_tag is not None):
            raise ValueError("membership_tag must be set exactly for member senders")
        self.content.encode_to(w)
        self.auth.encode_to(w)
        if self.membership_tag is not None:
            w.opaque(self.membership_tag)

    @classmethod
    def decode_from(cls, r: Reader) -> PublicMessage:
        content = FramedContent.decode_from(r)
        auth = FramedContentAuthData.read(r, content.content_type)
        tag = r.opaque() if content.sender.sender_type == SenderType.MEMBER else None
        return cls(content, auth, tag)


@dataclass(frozen=True, slots=True)
class PrivateMessage(Struct):
    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes
    encrypted_sender_data: bytes
    ciphertext: bytes

    def sender_data_aad(self) -> bytes:
        return SenderDataAAD(self.group_id, self.epoch, self.content_type).encode()

    def content_aad(self) -> bytes:
        return PrivateContentAAD(
            self.group_id, self.epoch, self.content_type, self.authenticated_data
        ).encode()

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.u8(self.content_type)
        w.opaque(self.authenticated_data)
        w.opaque(self.encrypted_sender_data)
        w.opaque(self.ciphertext)

    @classmethod
    def decode_from(cls, r: Reader) -> PrivateMessage:
        return cls(r.opaque(), r.u64(), _read_content_type(r), r.opaque(), r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class PrivateMessageContent(Struct):
    """Plaintext of PrivateMessage.ciphertext; ``padding`` is the number of zero bytes."""

    content: ContentBody
    auth: FramedContentAuthData
    padding: int = 0

    @property
    def content_type(self) -> ContentType:
        return content_type_of(self.content)

    def encode_to(self, w: Writer) -> None:
        self.auth.check_fits(content_type_of(self.content))
        if self.padding < 0:
            raise ValueError("negative padding")
        _write_body(w, self.content)
        self.auth.encode_to(w)
        w.fixed(bytes(self.padding))

    @classmethod
    def decode_from(cls, r: Reader) -> PrivateMessageContent:
        raise DecodeError("PrivateMessageContent needs its content type: use decode_for()")

    @classmethod
    def read(cls, r: Reader, content_type: ContentType) -> PrivateMessageContent:
        """Read the rest of ``r`` as a payload; the padding must be all zero bytes (6.3.1)."""
        body = _read_body(r, content_type)
        auth = FramedContentAuthData.read(r, content_type)
        padding = r.remaining()
        # One C-level scan instead of a Python loop over possibly kilobytes of padding.
        if padding and r.data[r.pos : r.end].lstrip(b"\x00"):
            raise DecodeError("PrivateMessageContent padding is not all zero bytes")
        r.pos = r.end
        return cls(body, auth, padding)

    @classmethod
    def decode_for(cls, data: bytes, content_type: ContentType) -> PrivateMessageContent:
        """Decode a decrypted payload whose content type comes from the PrivateMessage."""
        r = Reader(data)
        try:
            return cls.read(r, content_type)
        except DecodeError:
            raise
        except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:
            raise DecodeError(f"invalid PrivateMessageContent: {e}") from None


@dataclass(frozen=True, slots=True)
class SenderData(Struct):
    leaf_index: int
    generation: int
    reuse_guard: bytes  # 4 bytes

    def encode_to(self, w: Writer) -> None:
        if len(self.reuse_guard) != 4:
            raise ValueError("reuse_guard must be 4 bytes")
        w.u32(self.leaf_index)
        w.u32(self.generation)
        w.fixed(self.reuse_guard)

    @classmethod
    def decode_from(cls, r: Reader) -> SenderData:
        return cls(r.u32(), r.u32(), r.fixed(4))


@dataclass(frozen=True, slots=True)
class SenderDataAAD(Struct):
    group_id: bytes
    epoch: int
    content_type: ContentType

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.u8(self.content_type)

    @classmethod
    def decode_from(cls, r: Reader) -> SenderDataAAD:
        return cls(r.opaque(), r.u64(), _read_content_type(r))


@dataclass(frozen=True, slots=True)
class PrivateContentAAD(Struct):
    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.u8(self.content_type)
        w.opaque(self.authenticated_data)

    @classmethod
    def decode_from(cls, r: Reader) -> PrivateContentAAD:
        return cls(r.opaque(), r.u64(), _read_content_type(r), r.opaque())


MessageBody = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage

_WIRE_FORMAT_OF: dict[type, WireFormat] = {
    PublicMessage: WireFormat.PUBLIC_MESSAGE,
    PrivateMessage: WireFormat.PRIVATE_MESSAGE,
    Welcome: WireFormat.WELCOME,
    GroupInfo: WireFormat.GROUP_INFO,
    KeyPackage: WireFormat.KEY_PACKAGE,
}
_BODY_OF: dict[int, type[MessageBody]] = {int(v): k for k, v in _WIRE_FORMAT_OF.items()}


@dataclass(frozen=True, slots=True)
class MLSMessage(Struct):
    """The top-level envelope; version is always mls10 (anything else cannot be parsed)."""

    body: MessageBody

    @property
    def version(self) -> ProtocolVersion:
        return ProtocolVersion.MLS10

    @property
    def wire_format(self) -> WireFormat:
        return _WIRE_FORMAT_OF[type(self.body)]

    def encode_to(self, w: Writer) -> None:
        w.u16(ProtocolVersion.MLS10)
        w.u16(_WIRE_FORMAT_OF[type(self.body)])
        self.body.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> MLSMessage:
        version = r.u16()
        if version != ProtocolVersion.MLS10:
            raise DecodeError(f"unsupported protocol version {version}")
        wf = r.u16()
        body_cls = _BODY_OF.get(wf)
        if body_cls is None:
            raise DecodeError(f"unknown wire format {wf}")
        return cls(body_cls.decode_from(r))
