"""transcript-hashes.json: confirmed/interim hashes and the confirmation tag, all suites."""

from __future__ import annotations

import pytest

from roost.mls.constants import WireFormat
from roost.mls.crypto import get_cipher_suite
from roost.mls.errors import CryptoError, ValidationError
from roost.mls.framing import AuthenticatedContent, FramedContent, FramedContentAuthData, Sender
from roost.mls.key_schedule import confirmation_tag, verify_confirmation_tag
from roost.mls.transcript import (
    confirmed_transcript_hash,
    interim_transcript_hash,
    next_transcript_hashes,
)

from .vectors import cases, h


@pytest.mark.parametrize("case", cases("transcript-hashes"))
def test_transcript_hashes_vector(case):
    cs = get_cipher_suite(case["cipher_suite"])
    raw = h(case["authenticated_content"])
    ac = AuthenticatedContent.decode(raw)
    assert ac.encode() == raw
    interim_before = h(case["interim_transcript_hash_before"])

    confirmed, interim = next_transcript_hashes(cs, interim_before, ac)
    assert confirmed == h(case["confirmed_transcript_hash_after"])
    assert interim == h(case["interim_transcript_hash_after"])
    assert confirmed_transcript_hash(cs, interim_before, ac) == confirmed

    key = h(case["confirmation_key"])
    assert confirmation_tag(cs, key, confirmed) == ac.auth.confirmation_tag
    verify_confirmation_tag(cs, key, confirmed, ac.auth.confirmation_tag)
    with pytest.raises(CryptoError):
        verify_confirmation_tag(cs, key, interim, ac.auth.confirmation_tag)


def test_non_commit_rejected_and_empty_start():
    cs = get_cipher_suite(1)
    content = FramedContent(b"g", 0, Sender.member(0), b"", b"app data")
    ac = AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, content, FramedContentAuthData(b"sig"))
    with pytest.raises(ValidationError):
        confirmed_transcript_hash(cs, b"", ac)
    # Group creation: interim hash over the empty confirmed hash and its tag.
    tag = confirmation_tag(cs, b"k" * 32, b"")
    assert interim_transcript_hash(cs, b"", tag) == cs.hash(bytes([len(tag)]) + tag)
