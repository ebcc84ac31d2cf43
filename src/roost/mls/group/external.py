"""Proposals from outside the group (RFC 9420 section 12.1.8).

The homeserver is listed in each group's ``external_senders`` extension and signs Remove
proposals when an account or client is deleted; a joiner can ask to be added with a
``new_member_proposal`` Add. Both travel as PublicMessage without a membership tag.
"""

from __future__ import annotations

from dataclasses import replace

from ..constants import WireFormat
from ..credential import Credential
from ..crypto import CipherSuite
from ..crypto.ciphersuite import get_cipher_suite
from ..extension_types import ExternalSender, ExternalSenders
from ..extensions import Extension
from ..framing import (
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PublicMessage,
    Sender,
)
from ..group_context import GroupContext
from ..key_package import KeyPackage
from ..proposals import Add, Proposal, ProposalBody, Remove


def external_senders_extension(senders: list[tuple[bytes, Credential]]) -> Extension:
    """The group context extension naming the external senders (signature key, credential)."""
    return ExternalSenders(tuple(ExternalSender(k, c) for k, c in senders)).to_extension()


def _sign(cs: CipherSuite, context: FramedContent, signature_private_key: bytes) -> bytes:
    unsigned = AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, context, FramedContentAuthData(b""))
    # External and new_member_proposal senders do not bind the GroupContext (section 6.1).
    sig = cs.sign_with_label(signature_private_key, b"FramedContentTBS", unsigned.tbs(None))
    ac = replace(unsigned, auth=FramedContentAuthData(sig))
    return MLSMessage(PublicMessage.from_authenticated(ac, None)).encode()


def external_proposal(
    group_context: GroupContext,
    sender_index: int,
    signature_private_key: bytes,
    proposal: ProposalBody,
    authenticated_data: bytes = b"",
) -> bytes:
    """A proposal (e.g. ``Remove(leaf)``) signed by external sender ``sender_index``."""
    cs = get_cipher_suite(group_context.cipher_suite)
    content = FramedContent(
        group_context.group_id,
        group_context.epoch,
        Sender.external(sender_index),
        authenticated_data,
        Proposal(proposal),
    )
    return _sign(cs, content, signature_private_key)


def external_remove(
    group_context: GroupContext, sender_index: int, signature_private_key: bytes, leaf: int
) -> bytes:
    return external_proposal(group_context, sender_index, signature_private_key, Remove(leaf))


def new_member_add_proposal(
    group_context: GroupContext,
    key_package: KeyPackage,
    signature_private_key: bytes,
    authenticated_data: bytes = b"",
) -> bytes:
    """A joiner's request to be added (sender type new_member_proposal)."""
    cs = get_cipher_suite(group_context.cipher_suite)
    content = FramedContent(
        group_context.group_id,
        group_context.epoch,
        Sender.new_member_proposal(),
        authenticated_data,
        Proposal(Add(key_package)),
    )
    return _sign(cs, content, signature_private_key)
