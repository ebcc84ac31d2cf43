"""The MLS side of a client: credential policy for groups, joining from a Welcome.

A connection request carries the Welcome to a fresh two-user group: the requester claims one
KeyPackage per client of the responder, creates the group and adds them; the responder's
clients join from the Welcome with the private keys kept for their published KeyPackages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from roost.mls.constants import CredentialType
from roost.mls.credential import Credential
from roost.mls.errors import ValidationError
from roost.mls.framing import MLSMessage
from roost.mls.key_package import KeyPackage
from roost.mls.welcome import Welcome

from .credentials import certificate_client_ids, verify_chain, verify_client_credential
from .state import KeyPackageSecrets

if TYPE_CHECKING:
    from roost.mls.group.validation import CredentialPolicy


def credential_policy(as_certificate: bytes) -> CredentialPolicy:
    """Accept a group member only with an x509 credential issued by the AS, whose leaf
    certificate binds a client id to exactly the member's signature key."""

    def check(credential: Credential, signature_key: bytes) -> bool:
        if credential.credential_type != CredentialType.X509:
            raise ValidationError("member credential is not x509")
        chain = list(credential.certificates)
        leaf = verify_chain(chain, as_certificate)
        ids = certificate_client_ids(leaf)
        if len(ids) != 1:
            raise ValidationError("member certificate must name exactly one client")
        verify_client_credential(
            chain, as_certificate, client_id=ids[0], signature_key=signature_key
        )
        return True

    return check


def member_client_id(credential: Credential) -> str | None:
    """The client id in a member's (already verified) credential."""
    if credential.credential_type != CredentialType.X509 or not credential.certificates:
        return None
    from .credentials import load_certificate

    ids = certificate_client_ids(load_certificate(credential.certificates[0]))
    return ids[0] if ids else None


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
