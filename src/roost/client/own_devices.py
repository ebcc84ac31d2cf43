"""Bringing the user's other devices into its groups (docs/api.md, "Own devices"): for each
group, one KeyPackage is claimed for every client of our user that is not a member yet, and
one commit adds them all. Any member may do this for its own user; the DS checks the added
leaves' credentials.

Not done on every ``sync``: a client added with the password alone (or approved by mistake)
would then silently receive every group's traffic from the next poll of any device on. Adding
devices stays the user's act on a device that is already trusted, as ``roost group
add-devices`` or ``Groups.add_own_devices``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .client import RoostClient
from .credential_policy import member_client_id
from .errors import RoostError
from .group_events import GroupEvent, roster_clients
from .models import ClientInfo

if TYPE_CHECKING:
    from roost.mls.group import CommitOutput, Group
    from roost.mls.key_package import KeyPackage

# Answers for a group we are no longer in (removed, or the group was deleted): skipped when
# every group is handled.
_GONE = frozenset({"not_member", "group_not_found"})


# Commit on a group with retries on epoch conflicts (``Groups._commit``): group id, builder.
Commit = Callable[[bytes, Callable[["Group"], "CommitOutput"]], Awaitable[GroupEvent]]


class _AlreadyMembers(Exception):
    """Every client we were about to add is in the group by now (another device added it)."""


async def add_own_devices(
    client: RoostClient,
    group_of: Callable[[bytes], Group],
    targets: list[bytes],
    commit: Commit,
    *,
    one_group: bool,
) -> list[GroupEvent]:
    """One commit per group of ``targets`` that lacks some of our user's clients (``one_group``:
    the caller named it, so its errors are not skipped). Groups that need nothing, or whose
    missing clients have no KeyPackage for the group's suite, yield no event."""
    others = [c for c in (await client.me()).clients if c.client_id != client.client_id]
    events: list[GroupEvent] = []
    for gid in targets:
        try:
            event = await _add_to(client, group_of(gid), commit, others)
        except RoostError as e:
            if one_group or e.code not in _GONE:
                raise
            continue
        if event is not None:
            events.append(event)
    return events


async def _add_to(
    client: RoostClient, group: Group, commit: Commit, clients: list[ClientInfo]
) -> GroupEvent | None:
    present = set(roster_clients(group).values())
    kps: list[KeyPackage] = []
    for c in clients:
        if c.client_id in present:
            continue
        kp = await client.claim_client_key_package(
            c.user_id, c.client_uuid, cipher_suite=group.cs.suite_id
        )
        if kp is not None:
            kps.append(kp)
    if not kps:
        return None

    def build(g: Group) -> CommitOutput:
        # Checked again on every attempt: after an epoch conflict the winner may have been
        # another device of ours adding the same clients.
        now_present = set(roster_clients(g).values())
        todo = [kp for kp in kps if member_client_id(kp.leaf_node.credential) not in now_present]
        if not todo:
            raise _AlreadyMembers
        return g.commit(add=todo)

    try:
        return await commit(group.group_id, build)
    except _AlreadyMembers:
        return None
