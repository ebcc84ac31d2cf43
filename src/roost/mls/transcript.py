"""Transcript hashes (RFC 9420 section 8.2).

- ``confirmed_transcript_hash(cs, interim_before, commit_content)``: ``commit_content`` is
  the commit's ``AuthenticatedContent`` (only wire_format, content and signature are used,
  so the confirmation tag may still be a placeholder when the committer calls this).
- ``interim_transcript_hash(cs, confirmed, confirmation_tag)``.
- ``next_transcript_hashes(cs, interim_before, commit_content)`` -> ``(confirmed, interim)``
  using the confirmation tag carried by ``commit_content``.
At group creation the confirmed hash is ``b""`` and the epoch-0 interim hash is
``interim_transcript_hash(cs, b"", confirmation_tag_over_empty_hash)``.
"""

from __future__ import annotations

from .codec import encode_varint
from .constants import ContentType
from .crypto.ciphersuite import CipherSuite
from .errors import ValidationError
from .framing import AuthenticatedContent


def confirmed_transcript_hash(
    cs: CipherSuite, interim_before: bytes, commit_content: AuthenticatedContent
) -> bytes:
    if commit_content.content.content_type != ContentType.COMMIT:
        raise ValidationError("only commits enter the transcript hash")
    return cs.hash(interim_before + commit_content.confirmed_transcript_hash_input())


def interim_transcript_hash(cs: CipherSuite, confirmed: bytes, confirmation_tag: bytes) -> bytes:
    # InterimTranscriptHashInput = struct { MAC confirmation_tag; }, MAC being opaque<V>.
    return cs.hash(confirmed + encode_varint(len(confirmation_tag)) + confirmation_tag)


def next_transcript_hashes(
    cs: CipherSuite, interim_before: bytes, commit_content: AuthenticatedContent
) -> tuple[bytes, bytes]:
    tag = commit_content.auth.confirmation_tag
    if tag is None:
        raise ValidationError("commit without confirmation tag")
    confirmed = confirmed_transcript_hash(cs, interim_before, commit_content)
    return confirmed, interim_transcript_hash(cs, confirmed, tag)
