"""The homeserver's keys as a group member sees them (docs/api.md, "External sender"): our
homeserver's external-sender entry, verified against our AS, and the key that signs a group's
server notices — for a group of another domain, its external sender certified by that
domain's AS."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from roost.mls.constants import CredentialType, ExtensionType
from roost.mls.errors import MLSError
from roost.mls.extension_types import ExternalSender, ExternalSenders
from roost.mls.extensions import find_extension
from roost.protocol.base64url import unb64u

from .credential_policy import CredentialChecks
from .credentials import public_key_bytes, verify_chain
from .errors import CredentialError, RoostError
from .group_store import GroupStore

SERVER_URI_PREFIX = "roost:server:"


@dataclass(frozen=True, slots=True)
class ServerSender:
    """The homeserver's external-sender entry for one cipher suite (verified against the AS)."""

    cipher_suite: int
    signature_key: bytes
    credential: tuple[bytes, ...]
    external_sender: bytes


def _server_uris(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


class ServerKeys:
    """The homeserver keys one ``Groups`` needs, fetched once per cipher suite."""

    def __init__(self, client: CredentialChecks, store: GroupStore) -> None:
        self.client = client
        self.store = store
        self._senders: dict[int, ServerSender] = {}

    async def server_sender(self, cipher_suite: int | None = None) -> ServerSender:
        """The homeserver's external-sender key and credential, verified against the pinned AS
        certificate (SAN ``roost:server:<our domain>``, key = the certificate's key)."""
        suite = cipher_suite or self.client.state.cipher_suite
        cached = self._senders.get(suite)
        if cached is not None:
            return cached
        resp = await self.client.request(
            "GET", "/v1/ds/external-sender", params={"cipher_suite": suite}, auth=False
        )
        d = resp.json()
        key = unb64u(d["signature_key"])
        chain = [unb64u(c) for c in d["credential"]]
        leaf = verify_chain(chain, await self.client.as_certificate())
        if SERVER_URI_PREFIX + self.client.state.home_domain not in _server_uris(leaf):
            raise CredentialError("external-sender certificate does not name our homeserver")
        if public_key_bytes(leaf) != key:
            raise CredentialError("external-sender key differs from its certificate")
        ext = unb64u(d["external_sender"])
        try:
            parsed = ExternalSender.decode(ext)
        except MLSError as e:
            raise CredentialError(f"malformed external_sender: {e}") from e
        if parsed.signature_key != key:
            raise CredentialError("external_sender entry names another key")
        sender = ServerSender(suite, key, tuple(chain), ext)
        self._senders[suite] = sender
        return sender

    async def notice_key(self, group_id: bytes, suite: int) -> bytes:
        """The key that signs a group's server notices: the external-sender key of the DS of
        the group's domain — ours, or for a group of another domain the group's external sender
        certified by that domain's AS (SAN ``roost:server:<domain>``)."""
        domain = group_id.decode("ascii", "replace").rpartition("@")[2]
        if not domain or domain == self.client.state.home_domain:
            return (await self.server_sender(suite)).signature_key
        try:
            group = self.store.group(group_id)
            as_cert = await self.client.as_certificate(domain)
        except RoostError as e:
            raise ValueError(f"cannot check notices of {domain}: {e}") from None
        ext = find_extension(group.group_context.extensions, ExtensionType.EXTERNAL_SENDERS)
        senders = ExternalSenders.from_extension(ext).senders if ext is not None else ()
        for sender in senders:
            cred = sender.credential
            if cred.credential_type != CredentialType.X509 or not cred.certificates:
                continue
            try:
                leaf = verify_chain(list(cred.certificates), as_cert)
                uris = leaf.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName
                ).value.get_values_for_type(x509.UniformResourceIdentifier)
            except (CredentialError, x509.ExtensionNotFound):
                continue
            certified = SERVER_URI_PREFIX + domain in uris
            if certified and public_key_bytes(leaf) == sender.signature_key:
                return sender.signature_key
        raise ValueError(f"the group lists no external sender certified for {domain}")
