"""What happened in a group, as this client saw it, and the display text of each event: the
``GroupEvent`` records that ``Groups`` returns and keeps in the history, the DS's ``GroupOut``
summary, and the text shown for commits, proposals and homeserver notices."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from roost.mls.constants import SenderType
from roost.protocol.base64url import unb64u

from .credential_policy import member_client_id

if TYPE_CHECKING:
    from roost.mls.group import Group


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """Something that happened in a group, as this client saw it (also kept in the history).

    ``kind``: ``message`` (application data), ``commit`` (epoch change), ``proposal``,
    ``joined``, ``removed`` (we were removed; or our connection request's group was deleted
    after a rejection), ``connected`` (our connection request's group: the responder
    accepted), ``notice`` (verified homeserver notice), ``resynced`` (we rejoined in place of
    our own leaf: ``group_resync``), ``welcome_failed`` (a Welcome for this client that cannot
    be used; ``text`` says why), ``rejected`` (an item that failed to process; ``text`` says
    why)."""

    kind: str
    group_id: bytes
    sender: str = ""  # client id ("" for the homeserver)
    data: bytes = b""
    epoch: int = 0
    group_seq: int = 0
    text: str = ""
    notice: dict[str, Any] | None = None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    policy: str = ""  # our notification policy for the group, when set (for notifications)

    @property
    def message(self) -> str:
        return self.data.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class SentMessage:
    group_seq: int
    message_id: str
    ciphertext: bytes  # the PrivateMessage as sent (resend it with the same id to retry)


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """A ``GroupOut`` answer of the DS."""

    group_id: bytes
    cipher_suite: int
    epoch: int
    group_seq: int
    external_join: bool
    roles: dict[str, str]
    my_leaf: int | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GroupSummary:
        return cls(
            unb64u(d["group_id"]),
            int(d.get("cipher_suite", 1)),
            int(d["epoch"]),
            int(d.get("group_seq", 0)),
            bool(d.get("external_join", False)),
            dict(d.get("roles") or {}),
            d.get("my_leaf"),
        )


def client_of(group: Group, leaf: int) -> str:
    """The client id of a leaf ("" for a blank one)."""
    node = group.tree.leaf(leaf)
    if node is None:
        return ""
    return member_client_id(node.credential) or ""


def roster_clients(group: Group) -> dict[int, str]:
    """Leaf index → client id of every member."""
    return {i: client_of(group, i) for i, _, _ in group.roster()}


class Rosters:
    """``roster_clients`` of each group, worked out once per epoch (not per message received):
    the tree changes only by a commit, which starts a new epoch with its own authenticator.
    The maps handed out are shared: read them, do not change them."""

    def __init__(self) -> None:
        self._by_group: dict[bytes, tuple[bytes, dict[int, str]]] = {}

    def of(self, group: Group) -> dict[int, str]:
        epoch = group.epoch_authenticator
        held = self._by_group.get(group.group_id)
        if held is None or held[0] != epoch:
            held = self._by_group[group.group_id] = (epoch, roster_clients(group))
        return held[1]


def sender_name(sender: Any, leaves: dict[int, str]) -> str:
    if sender.sender_type == SenderType.MEMBER:
        return leaves.get(sender.index, f"leaf {sender.index}")
    if sender.sender_type == SenderType.EXTERNAL:
        return ""  # the homeserver (our only external sender)
    return "new member"


def proposal_text(received: Any) -> str:
    p = received.proposal
    if p is None:
        return "proposal"
    body = getattr(p, "body", p)
    return type(body).__name__.lower()


def describe_commit(event: GroupEvent) -> GroupEvent:
    """The event with its text: who changed the epoch and whom it added or removed."""
    who = event.sender or "the homeserver"
    if event.sender and event.sender in event.added:  # an external commit: it came in itself
        how = "rejoined the group (resync)" if event.sender in event.removed else "joined"
        return replace(event, text=f"epoch {event.epoch}: {who} {how}")
    parts = []
    if event.added:
        parts.append("added " + ", ".join(event.added))
    if event.removed:
        parts.append("removed " + ", ".join(event.removed))
    text = "; ".join(parts) or "updated keys"
    return replace(event, text=f"epoch {event.epoch}: {who} {text}")


def notice_text(notice: dict[str, Any]) -> str:
    kind = notice.get("type")
    if kind == "group_deleted":
        return "the group was deleted"
    if kind == "display_name_changed":
        return f"{notice.get('user_id')} is now called {notice.get('display_name')!r}"
    if kind == "user_deleted":
        return f"{notice.get('user_id')} deleted their account"
    if kind == "admin_promoted":
        return f"{notice.get('user_id')} is now an admin: the group had no admin left"
    if kind == "domain_forgotten":
        users = ", ".join(str(u) for u in notice.get("user_ids") or [])
        return f"the homeserver stopped federating with {notice.get('domain')}: {users} leave"
    return f"notice {kind}"
