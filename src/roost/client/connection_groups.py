"""The two-user group of a connection (docs/api.md, "Connections"), and joining a group from a
Welcome with the keys kept for our published KeyPackages.

A connection request carries the Welcome to a fresh two-user group: the requester claims one
KeyPackage per client of the responder, creates the group and adds them; the responder's
clients join from the Welcome with the private keys kept for their published KeyPackages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from roost.mls.errors import MLSError, ValidationError
from roost.mls.framing import MLSMessage
from roost.mls.key_package import KeyPackage
from roost.mls.welcome import Welcome

from .connections import ConnectionsApi
from .errors import MissingAsCertificate, RoostError
from .group_store import GroupStates
from .keypackages import KeyPackagesApi
from .models import Connection
from .queues import QueuesApi
from .state import KeyPackageSecrets

if TYPE_CHECKING:
    from roost.mls.group import Group


def welcome_target(
    welcome: bytes, keypackages: dict[str, KeyPackageSecrets]
) -> tuple[Welcome, str, KeyPackageSecrets]:
    """Decode a Welcome and find which of our KeyPackages (by ref, hex) it is for."""
    msg = MLSMessage.decode(welcome)
    if not isinstance(msg.body, Welcome):
        raise ValidationError("the payload is not a Welcome")
    for s in msg.body.secrets:
        ref = s.new_member.hex()
        secrets = keypackages.get(ref)
        if secrets is not None and secrets.key_package:
            return msg.body, ref, secrets
    raise ValidationError("the Welcome is for none of this client's KeyPackages")


def decode_key_package(secrets: KeyPackageSecrets) -> KeyPackage:
    return KeyPackage.decode(secrets.key_package)


class ConnectionGroups(KeyPackagesApi, ConnectionsApi, QueuesApi, GroupStates):
    async def request_connection(self, user_id: str) -> tuple[Connection, Group]:
        """Open a connection to ``user_id`` and send the Welcome to a new two-user group
        holding this client and one KeyPackage of each of the responder's clients."""
        from roost.mls.group import Group

        conn = await self.open_connection(user_id)
        kps = await self.claim_key_packages(user_id)  # the request's single claim, verified
        if not kps:
            raise RoostError(0, "no_key_packages", f"{user_id} has no KeyPackages to claim")
        group = Group.create(
            self.state.cipher_suite,
            self.credential,
            self.state.signature_private,
            credential_policy=self.credential_policy(),
        )
        out = group.commit(add=kps)
        group.merge_pending_commit()  # no Delivery Service yet: the group starts here
        assert out.welcome is not None
        conn = await self.send_connection_request(conn.connection_id, out.welcome)
        self.save_group(group)
        return conn, group

    def join_from_welcome(self, welcome: bytes) -> Group:
        """Join a group from a Welcome addressed to one of our published KeyPackages.
        ``MissingAsCertificate`` when a member's domain AS certificate is still to fetch."""
        from roost.mls.group import Group

        try:
            w, ref, secrets = welcome_target(welcome, self.state.keypackages)
            group = Group.join_from_welcome(
                w,
                (
                    decode_key_package(secrets),
                    secrets.init_private,
                    secrets.encryption_private,
                    self.state.signature_private,
                ),
                credential_policy=self.credential_policy(),
            )
        except MissingAsCertificate:
            raise
        except MLSError as e:
            raise RoostError(0, "invalid_welcome", str(e)) from e
        if not secrets.last_resort:  # a normal KeyPackage is single-use: drop its keys
            del self.state.keypackages[ref]
        self.save()
        self.save_group(group)
        return group

    async def accept_connection_request(
        self, connection_id: str, *, welcome: bytes | None = None, reply: bytes | None = None
    ) -> tuple[Connection, Group | None]:
        """Join the connection's group from its Welcome (looked up in the direct queue when
        not given), then accept. A request that carries no Welcome for us is accepted without
        a group."""
        requester: str | None = None
        if welcome is None:
            welcome, requester = await self._connection_request(connection_id)
        else:
            requester = next(
                (c.requester for c in await self.connections() if c.connection_id == connection_id),
                None,
            )
        if welcome and requester and "@" in requester:
            # The group's members include the requester: its domain's AS must be at hand.
            await self.ensure_as_certificates([requester.rpartition("@")[2]])
        group = None
        if welcome:
            try:
                group = await self.with_as_certificates(lambda: self.join_from_welcome(welcome))
            except RoostError as e:
                if e.code != "invalid_welcome":
                    raise
                # Not a Welcome for this client (or not a Welcome at all): accept anyway,
                # another of the user's clients may hold the KeyPackage it names.
                group = None
        conn = await self.accept_connection(connection_id, reply)
        return conn, group

    async def _connection_request(self, connection_id: str) -> tuple[bytes | None, str | None]:
        """The payload and sender of the connection's request event in the direct queue."""
        after = 0
        while True:
            page = await self.fetch_direct(after)  # from 0: the request may be acked already
            for e in page.events:
                if e.type == "connection_request" and e.connection_id == connection_id:
                    return e.payload, e.sender
            if not page.has_more or not page.events:
                return None, None
            after = page.last_seq
