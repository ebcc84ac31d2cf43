"""Which credentials this client accepts (docs/api.md, "X.509 credential profile"): the AS
certificates of the domains it deals with (ours pinned at registration, others fetched through
the home server once and kept), verifying a client's credential against them, and the
synchronous credential policy its MLS groups run for every member.

A member of a domain whose AS certificate is not at hand makes the policy raise
``MissingAsCertificate(domain)``; callers fetch it and try again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from roost.mls.constants import CredentialType
from roost.mls.credential import Credential
from roost.mls.errors import ValidationError

from .credentials import (
    VerifiedClient,
    certificate_client_ids,
    load_certificate,
    verify_chain,
    verify_client_credential,
)
from .directory import DirectoryApi
from .errors import CredentialError, MissingAsCertificate, RoostError, StateError
from .session import segment

if TYPE_CHECKING:
    from roost.mls.group.validation import CredentialPolicy


T = TypeVar("T")


def issued_by(as_certificate: bytes) -> CredentialPolicy:
    """Accept a group member only with an x509 credential issued by this AS, whose leaf
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
    ids = certificate_client_ids(load_certificate(credential.certificates[0]))
    return ids[0] if ids else None


def credential_domain(credential: Credential) -> str | None:
    """The domain of the client id an x509 credential's leaf names (which AS must have
    issued it), or None when there is none to read (the home policy then refuses it)."""
    if credential.credential_type != CredentialType.X509 or not credential.certificates:
        return None
    try:
        client_ids = certificate_client_ids(load_certificate(credential.certificates[0]))
    except CredentialError:
        return None
    if len(client_ids) != 1:
        return None
    return client_ids[0].split("/", 1)[0].rpartition("@")[2] or None


class CredentialChecks(DirectoryApi):
    """AS certificates and credential verification for one client."""

    async def as_certificate(self, domain: str | None = None) -> bytes:
        """The AS certificate (DER) of ``domain``: the one pinned at registration for ours;
        another domain's is fetched through our home server once and kept in the state."""
        domain = (domain or self.state.home_domain).strip().lower()
        if domain != self.state.home_domain:
            cached = self.state.remote_as_certificates.get(domain)
            if cached is None:
                path = f"/v1/domains/{segment(domain)}/as-certificate"
                cached = (await self.request("GET", path)).content
                load_certificate(cached)  # refuse to keep something that is not a certificate
                self.state.remote_as_certificates[domain] = cached
                self.save()
            return cached
        if not self.state.as_certificate:
            resp = await self.request("GET", "/v1/as/certificate", auth=False)
            self.state.as_certificate = resp.content
            self.save()
        return self.state.as_certificate

    async def ensure_as_certificates(self, domains: Iterable[str]) -> None:
        """Fetch (through the home server) the AS certificates of these domains that the state
        does not hold yet, so the synchronous group credential policy can check their members."""
        for domain in sorted({d.strip().lower() for d in domains}):
            await self.as_certificate(domain)

    async def with_as_certificates(self, work: Callable[[], T]) -> T:
        """Run MLS ``work`` under the credential policy; when it meets a member of a domain
        whose AS certificate we have not fetched yet, fetch that certificate (through our
        home server) and run it again."""
        fetched: set[str] = set()
        while True:
            try:
                return work()
            except MissingAsCertificate as e:
                if e.domain in fetched:
                    raise
                fetched.add(e.domain)
                await self.ensure_as_certificates([e.domain])

    def credential_policy(self) -> CredentialPolicy:
        """Accept group members only with credentials issued by the AS of the domain in their
        client id: ours (pinned), or another's already fetched (``ensure_as_certificates``);
        ``MissingAsCertificate`` for a domain not fetched yet."""
        if not self.state.as_certificate:
            raise StateError("no AS certificate pinned; register or log in first")
        home = issued_by(self.state.as_certificate)
        remote = self.state.remote_as_certificates

        def check(credential: Credential, signature_key: bytes) -> bool | None:
            domain = credential_domain(credential)
            if domain is None or domain == self.state.home_domain:
                return home(credential, signature_key)
            if domain not in remote:
                raise MissingAsCertificate(domain)
            return issued_by(remote[domain])(credential, signature_key)

        return check

    async def verify_credential(
        self,
        credential: Credential | Iterable[bytes],
        *,
        client_id: str,
        signature_key: bytes | None = None,
    ) -> VerifiedClient:
        """Verify an x509 credential (e.g. from a LeafNode) for ``client_id``."""
        if isinstance(credential, Credential):
            if credential.credential_type != CredentialType.X509:
                raise CredentialError("not an x509 credential")
            chain = list(credential.certificates)
        else:
            chain = list(credential)
        domain = client_id.split("/", 1)[0].rpartition("@")[2]
        as_cert = await self.as_certificate(domain)
        return verify_client_credential(
            chain, as_cert, client_id=client_id, signature_key=signature_key
        )

    async def verify_client(
        self, client_id: str, signature_key: bytes | None = None
    ) -> VerifiedClient:
        """Fetch ``client_id``'s published credential and verify it against its domain's AS."""
        user_id = client_id.rsplit("/", 1)[0]
        for info in await self.user_clients(user_id):
            if info.client_id == client_id:
                verified = await self.verify_credential(
                    info.credential, client_id=client_id, signature_key=signature_key
                )
                if verified.signature_key != info.signature_key:
                    raise CredentialError("published signature key differs from the credential")
                return verified
        raise RoostError(404, "client_not_found", f"no client {client_id}")
