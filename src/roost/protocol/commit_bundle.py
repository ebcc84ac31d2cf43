"""``RoostCommitBundle`` (docs/api.md, "Groups", "Identifiers and wire structures"): the body of
``POST /v1/groups/{group_id}/commits``.

    MLSMessage commit || MLSMessage group_info || optional<MLSMessage> welcome
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.mls.codec import Reader

from .mls_message_span import mls_message_span


@dataclass(frozen=True, slots=True)
class CommitBundle:
    commit: bytes  # PublicMessage commit, as an MLSMessage
    group_info: bytes  # the signed GroupInfo of the new epoch
    welcome: bytes | None  # present iff the commit adds members


def encode_commit_bundle(commit: bytes, group_info: bytes, welcome: bytes | None) -> bytes:
    tail = b"\x00" if welcome is None else b"\x01" + welcome
    return commit + group_info + tail


def decode_commit_bundle(body: bytes) -> CommitBundle:
    """Strictly decode a bundle; raises DecodeError on malformed input."""
    r = Reader(body)
    commit = mls_message_span(r)
    group_info = mls_message_span(r)
    welcome = r.optional(mls_message_span)
    r.finish()
    return CommitBundle(commit, group_info, welcome)
