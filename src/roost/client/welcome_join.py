"""Joining a group from a Welcome of the direct queue (docs/api.md, "Welcome delivery and
joining").

Which of the user's clients a Welcome is for is public: its ``secrets[].new_member``
KeyPackageRefs. A Welcome naming none of ours is for another client and passed over. One
naming ours is opened with that KeyPackage's keys; when its GroupInfo leaves the ratchet tree
out (RFC 9420 section 12.4.3.3), the tree is fetched from the DS (``RoostGroupState``) and gets
the same checks as a tree in the Welcome. What cannot work however often it is retried is a
``WelcomeFailed`` (the caller reports it); anything else (the DS unreachable, an AS
certificate still to fetch) propagates, so that the Welcome stays unacked and is tried again.

The group's key (``group_key``) comes with the Welcome event, wrapped for the epoch the Welcome
joins: it is unwrapped right after the Welcome is opened (the epoch's exporter needs no tree),
so that fetching the tree can present it. No wrap: a legacy group, without a key; a wrap that
does not open is a ``WelcomeFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from roost.mls.constants import ExtensionType
from roost.mls.errors import MLSError
from roost.mls.extensions import find_extension
from roost.mls.framing import MLSMessage
from roost.mls.group_info import GroupInfo
from roost.mls.key_package import KeyPackage
from roost.mls.welcome import Welcome
from roost.protocol.base64url import b64u
from roost.protocol.group_state import decode_group_state

from .errors import MissingAsCertificate, RoostError
from .group_key import GroupKeyError, key_headers, unwrap_group_key, wrap_key_of
from .state import KeyPackageSecrets

if TYPE_CHECKING:
    from roost.mls.group import Group, WelcomeToJoin

    from .client import RoostClient

# Answers of the DS that will not change on a retry: the group is gone, we are not (or no
# longer) a member, the group id is refused or its domain refused.
FINAL_STATUSES = frozenset({400, 403, 404, 410, 422})


class WelcomeFailed(Exception):
    """A Welcome for one of our KeyPackages that cannot be used; ``group_id`` is the group it
    names once decrypted (None before)."""

    def __init__(self, reason: str, group_id: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.group_id = group_id


class WelcomeOutdated(WelcomeFailed):
    """The Welcome leaves the tree out and the group moved on before we fetched it: the DS
    keeps only the latest tree. The leaf it added for us is still ours to rejoin in place of
    (presenting ``group_key``, the key the Welcome brought)."""

    def __init__(self, reason: str, group_id: bytes, group_key: bytes | None) -> None:
        super().__init__(reason, group_id)
        self.group_key = group_key


def is_welcome(payload: bytes) -> bool:
    """Whether ``payload`` is an MLSMessage carrying a Welcome. A connection request's payload
    is opaque to the server: a request from a client that builds no group carries none."""
    try:
        return isinstance(MLSMessage.decode(payload).body, Welcome)
    except MLSError:
        return False


def our_key_package(
    welcome: Welcome, keypackages: dict[str, KeyPackageSecrets]
) -> tuple[str, KeyPackageSecrets] | None:
    """The first of our KeyPackages (ref hex, secrets) the Welcome names; None if none."""
    for entry in welcome.secrets:
        ref = entry.new_member.hex()
        secrets = keypackages.get(ref)
        if secrets is not None:
            return ref, secrets
    return None


@dataclass(frozen=True, slots=True)
class JoinedWelcome:
    """A group joined in memory from a Welcome; ``WelcomeJoiner.keep`` saves it and spends the
    KeyPackage (once the DS took our queue: until then a retry starts over)."""

    group: Group
    ref: str  # our KeyPackage the Welcome named (hex KeyPackageRef)
    group_key: bytes | None = field(default=None, repr=False)  # None: a legacy group


def transient_welcome_error(e: RoostError) -> bool:
    """An error that may pass (the DS or another domain unreachable or, by federation
    policy, refused for now; rate limits; an AS certificate still to fetch): the Welcome
    stays unacked and is tried again.

    A block between our domain and the group's is lifted (the next try joins) or ends with
    one domain forgetting the other: the refusal then says ``"forgotten": true``, or the
    group's DS removed our leaf (``not_member``), both final (``welcome_failed``)."""
    if isinstance(e, MissingAsCertificate):
        return True
    if e.code == "federation_refused":
        return not e.problem.get("forgotten")
    return e.code == "transport_error" or e.status in (408, 429) or e.status >= 500


class WelcomeJoiner:
    """Joins one client to groups from Welcomes, fetching the tree when it is left out."""

    def __init__(self, client: RoostClient) -> None:
        self.client = client

    async def join(self, welcome: bytes, key_wrap: str | None = None) -> JoinedWelcome | None:
        """The group joined (in memory), or None when the Welcome is for another of the
        user's clients. ``key_wrap``: the event's ``group_key_wrap``. ``WelcomeFailed`` when
        it is ours but unusable (its key wrap too); other errors may pass
        (``transient_welcome_error``)."""
        from roost.mls.group import Group

        try:
            msg = MLSMessage.decode(welcome)
        except MLSError as e:
            raise WelcomeFailed(f"undecodable Welcome: {e}") from e
        if not isinstance(msg.body, Welcome):
            raise WelcomeFailed("the payload is not a Welcome")
        found = our_key_package(msg.body, self.client.state.keypackages)
        if found is None:
            return None
        ref, secrets = found
        if not secrets.key_package:
            raise WelcomeFailed("the KeyPackage it names was not kept by this client")
        keys = (
            KeyPackage.decode(secrets.key_package),
            secrets.init_private,
            secrets.encryption_private,
            self.client.state.signature_private,
        )
        try:
            opened = Group.open_welcome(msg.body, keys)
        except MLSError as e:
            raise WelcomeFailed(f"cannot open the Welcome: {e}") from e
        group_id = opened.opened.group_id
        key = None if key_wrap is None else self._unwrap(opened, key_wrap)
        tree = None if opened.opened.carries_ratchet_tree else await self._tree(opened, key)
        try:
            group = await self.client.with_as_certificates(
                lambda: Group.join_opened(
                    opened, tree, credential_policy=self.client.credential_policy()
                )
            )
        except MissingAsCertificate:
            raise
        except MLSError as e:
            where = "the DS's" if tree is not None else "the Welcome's"
            raise WelcomeFailed(f"cannot join with {where} ratchet tree: {e}", group_id) from e
        except RoostError as e:  # fetching a member domain's AS certificate was refused
            if e.status in FINAL_STATUSES and not transient_welcome_error(e):
                raise WelcomeFailed(f"a member's AS certificate: {e}", group_id) from e
            raise  # e.g. a block of that domain: lifted later, or ends with a forget
        return JoinedWelcome(group, ref, key)

    @staticmethod
    def _unwrap(opened: WelcomeToJoin, key_wrap: str) -> bytes:
        """The group's key, unwrapped with the exporter of the epoch the Welcome joins."""
        group_id = opened.opened.group_id
        try:
            return unwrap_group_key(key_wrap, group_id, wrap_key_of(opened.export_secret, group_id))
        except MLSError as e:  # the GroupInfo's confirmation tag does not match
            raise WelcomeFailed(f"cannot derive the Welcome's epoch: {e}", group_id) from e
        except GroupKeyError as e:
            raise WelcomeFailed(f"the group key sent with the Welcome: {e}", group_id) from e

    def keep(self, joined: JoinedWelcome, *, save_group: bool = True) -> None:
        """Spend the KeyPackage (a normal one is single-use: its keys go) and save the group."""
        secrets = self.client.state.keypackages.get(joined.ref)
        if secrets is not None and not secrets.last_resort:
            del self.client.state.keypackages[joined.ref]
        self.client.save()
        if save_group:
            self.client.save_group(joined.group)

    async def _tree(self, opened: WelcomeToJoin, key: bytes | None) -> bytes:
        """The ratchet tree of the Welcome's epoch, from the DS's ``RoostGroupState``."""
        group_id, epoch = opened.opened.group_id, opened.opened.epoch
        try:
            resp = await self.client.request(
                "GET", f"/v1/groups/{b64u(group_id)}/group-info", headers=key_headers(key)
            )
        except RoostError as e:
            if e.status in FINAL_STATUSES and not transient_welcome_error(e):
                raise WelcomeFailed(f"the DS gives no ratchet tree: {e}", group_id) from e
            raise
        try:
            state = decode_group_state(resp.content)
            info = MLSMessage.decode(state.group_info).body
        except MLSError as e:
            raise WelcomeFailed(f"malformed group state from the DS: {e}", group_id) from e
        if not isinstance(info, GroupInfo):
            raise WelcomeFailed("the DS's group state holds no GroupInfo", group_id)
        if info.group_context.epoch != epoch:
            # The DS keeps only the latest tree: the one of the Welcome's epoch is gone.
            raise WelcomeOutdated(
                f"the group moved on to epoch {info.group_context.epoch} before the ratchet "
                f"tree of the Welcome's epoch {epoch} was fetched",
                group_id,
                key,
            )
        if state.ratchet_tree is not None:
            return state.ratchet_tree
        ext = find_extension(info.extensions, ExtensionType.RATCHET_TREE)
        if ext is None:
            raise WelcomeFailed("the DS's group state holds no ratchet tree", group_id)
        return ext.extension_data
