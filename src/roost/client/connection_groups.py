"""Joining a group from a Welcome with the keys kept for our published KeyPackages (a DS
Welcome event, or the Welcome a connection request carries: ``connection_requests``)."""

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
