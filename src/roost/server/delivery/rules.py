"""The DS's rules on group changes and sends (docs/api.md "Groups"): role rules by proposer,
the resync rule for external commits, the connection requirement for Adds, and the one
epoch-window rule for application messages.

The role rules judge proposals that the observer has already verified and resolved (the staged
commit, or an applied standalone proposal); they never see unverified input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from roost.mls.constants import SenderType
from roost.mls.group.proposal_rules import QueuedProposal
from roost.mls.proposals import Add, GroupContextExtensions, ReInit, Remove

from ..auth.service import AuthService, Principal
from ..connections.service import ConnectionService
from ..errors import Problem
from ..store import Database
from ..store.async_engine import AsyncConnection
from .federation_port import RemotePrincipal, domain_of
from .group_store import GroupStore, Member

ADMIN = "admin"
MEMBER = "member"
ROLES = (ADMIN, MEMBER)
# Application messages of the current epoch or this many before it are accepted: members keep
# one epoch of grace for messages sent while a commit was in flight.
APP_EPOCH_WINDOW = 1


def app_epoch_refusal(message_epoch: int, group_epoch: int, group_seq: int) -> Problem | None:
    """The epoch-window rule for an application message (docs/api.md): None if accepted, else
    ``409 epoch_too_old`` (older than the window) or ``409 epoch_conflict`` (a future epoch),
    both with the group's ``epoch`` and ``group_seq``."""
    if group_epoch - APP_EPOCH_WINDOW <= message_epoch <= group_epoch:
        return None
    return Problem(
        409,
        "epoch_conflict" if message_epoch > group_epoch else "epoch_too_old",
        f"the group is at epoch {group_epoch}",
        extra={"epoch": group_epoch, "group_seq": group_seq},
    )


def app_epoch_outside_window(message_epoch: int, group_epoch: int) -> bool:
    return app_epoch_refusal(message_epoch, group_epoch, 0) is not None


def epoch_conflict(epoch: int, group_seq: int, commit_seq: int) -> Problem:
    """A handshake for an epoch that is not the group's current one. ``commit_seq`` is the
    ``group_seq`` of the commit that began the current epoch: a member whose queue has not
    brought it yet knows the commit is still on its way to it."""
    return Problem(
        409,
        "epoch_conflict",
        f"the group is at epoch {epoch}",
        extra={"epoch": epoch, "group_seq": group_seq, "commit_seq": commit_seq},
    )


def check_roles(
    proposals: Iterable[QueuedProposal],
    by_leaf: dict[int, Member],
    roles: dict[str, str],
    committer_user: str,
    external: bool,
    added_user: Callable[[Add], str],
) -> list[Add]:
    """Role rules by proposer (docs/api.md): only admins add other users' clients, remove other
    members' leaves or change the group; any member may add its own user's clients.
    ``added_user`` names the user of an Add's client from its verified leaf credential.
    Returns the Adds."""
    adds: list[Add] = []
    for q in proposals:
        body = q.proposal.body
        if q.sender_type == SenderType.EXTERNAL:
            continue  # the homeserver's own Remove proposals
        if q.sender_type == SenderType.MEMBER:
            proposer = by_leaf.get(q.sender_index)  # type: ignore[arg-type]
            proposer_user = proposer.user_id if proposer else None
        else:  # new_member_proposal / new_member_commit: judged by the committer
            proposer_user = committer_user if not external else None
        is_admin = proposer_user is not None and roles.get(proposer_user) == ADMIN
        if isinstance(body, Add):
            adds.append(body)
            own = proposer_user is not None and added_user(body) == proposer_user
            if not (own or is_admin):
                raise Problem(403, "role_required", "only admins add other users")
        elif isinstance(body, Remove):
            target = by_leaf.get(body.removed)
            own = target is not None and target.user_id == proposer_user
            if external:
                continue  # checked against the joiner's own leaves (commits.py)
            if not (own or is_admin):
                raise Problem(403, "role_required", "only admins remove other members")
        elif isinstance(body, GroupContextExtensions | ReInit) and not is_admin:
            raise Problem(403, "role_required", "only admins change the group")
    return adds


def resync_target(
    removed: Sequence[int], by_leaf: dict[int, Member], client: tuple[str, str]
) -> Member | None:
    """The resync rule (docs/api.md "Resync"; RFC 9420 §12.4.3.2): an external commit may
    remove one leaf, the joining client's own, and only that client rejoins in its place.
    Returns the member replaced (None: a plain external join), else ``403 not_own_leaf``."""
    if not removed:
        return None
    target = by_leaf.get(removed[0]) if len(removed) == 1 else None
    if target is None or target.gone or (target.client_uuid, target.user_id) != client:
        raise Problem(
            403, "not_own_leaf", "an external commit may only remove the joining client's own leaf"
        )
    return target


@dataclass(frozen=True, slots=True)
class AddedClient:
    leaf_index: int
    client_uuid: str
    user_id: str


class AddRule:
    """Added clients exist and belong to the committer's user, to a user connected to it, or to
    a user the committer's user has an unanswered connection request to (the request's two-user
    group; that user's Welcome travels in the request, not from the DS)."""

    def __init__(
        self,
        db: Database,
        home_domain: str,
        auth: AuthService,
        connections: ConnectionService,
        store: GroupStore,
    ) -> None:
        self.db = db
        self.domain = home_domain
        self.auth = auth
        self.connections = connections
        self.store = store

    async def check(
        self, p: Principal, committer_user: str, added: Iterable[AddedClient]
    ) -> dict[str, str]:
        """Returns user id -> user uuid of the added users the DS delivers the Welcome to (""
        for a user of another domain added by a committer of a third one); a user added under
        the committer's connection request is not among them: the request carries the Welcome,
        which the user opens only on accepting."""
        out: dict[str, str] = {}
        async with self.db.engine.connect() as conn:
            if committer_user == p.user_id:  # also a remote principal (uuid its server reported)
                committer_uuid: str | None = p.user_uuid
            else:
                committer = await self.auth.find_user(committer_user, conn)
                committer_uuid = committer.uuid if committer else None
            for a in added:
                if domain_of(a.user_id) == self.domain:
                    if await self.auth.get_client(a.client_uuid, conn) is None:
                        raise Problem(422, "credential_mismatch", "an added client does not exist")
                    user = await self.auth.find_user(a.user_id, conn)
                    user_uuid = user.uuid if user else None
                else:
                    user_uuid = await self._remote_add(conn, p, committer_user, a)
                    if user_uuid == "":
                        out[a.user_id] = ""
                        continue
                if user_uuid is None or committer_uuid is None:
                    raise Problem(422, "credential_mismatch", "an added user does not exist")
                if user_uuid != committer_uuid and not await self.connections.is_connected(
                    conn, committer_uuid, user_uuid
                ):
                    if not await self.connections.request_open(conn, committer_uuid, user_uuid):
                        raise Problem(
                            403, "no_connection", f"{a.user_id} is not connected to the committer"
                        )
                    continue
                out[a.user_id] = user_uuid
        return out

    async def client_uuid_taken(
        self, conn: AsyncConnection, client_uuid: str, user_id: str
    ) -> bool:
        """A remote client's uuid may not be a local client's. (Members are matched by user
        and client together, so another user's member client with the same uuid is no
        other leaf's.)"""
        return await self.auth.get_client(client_uuid, conn) is not None

    async def _remote_add(
        self,
        conn: AsyncConnection,
        p: Principal,
        committer_user: str,
        a: AddedClient,
    ) -> str | None:
        """An added client of another domain (credential already verified against its AS):
        the uuid its server reported for the user (from the connection rows), or "" when the
        committer is of another domain too: their connection lives on their servers, not here —
        the added user's server gave out the KeyPackage under its claim rule and checks the
        inviter's connection again when the Welcome arrives (``ds.welcome``)."""
        if await self.client_uuid_taken(conn, a.client_uuid, a.user_id):
            raise Problem(422, "credential_mismatch", "the added client's id is already in use")
        if isinstance(p, RemotePrincipal) and domain_of(committer_user) == p.domain:
            return ""
        return await self.connections.remote_user_uuid(conn, a.user_id)
