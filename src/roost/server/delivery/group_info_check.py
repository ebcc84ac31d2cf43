"""The DS serves the GroupInfo of the latest epoch to joiners (docs/api.md "GroupInfo
extensions"), so the extensions in it must be what RFC 9420 defines: checked at creation and
with every commit, before the observer looks at the rest. A malformed one is ``422
invalid_<extension name>`` and nothing is stored."""

from __future__ import annotations

from roost.mls.errors import MLSError
from roost.mls.framing import MLSMessage
from roost.mls.group_info import GroupInfo
from roost.mls.group_info_extensions import MalformedExtension, check_group_info_extensions

from ..errors import Problem

# The answers of ``check_extensions_of`` (for the routes' documented problems).
GROUP_INFO_EXTENSION_PROBLEMS = (
    (422, "invalid_external_pub"),
    (422, "invalid_ratchet_tree"),
    (422, "invalid_external_senders"),
    (422, "invalid_required_capabilities"),
)


def check_extensions_of(group_info: bytes) -> None:
    """``422 invalid_external_pub`` / ``invalid_ratchet_tree`` / ``invalid_external_senders`` /
    ``invalid_required_capabilities`` for a malformed extension. A GroupInfo that does not even
    decode is left to the observer, which refuses it with the caller's usual code."""
    try:
        gi = MLSMessage.decode(group_info).body
    except MLSError:
        return
    if not isinstance(gi, GroupInfo):
        return
    try:
        check_group_info_extensions(gi)
    except MalformedExtension as e:
        raise Problem(422, f"invalid_{e.name}", str(e)) from None
    except MLSError:  # e.g. an unknown cipher suite: the caller's checks answer it
        return
