"""Leaf credentials: which client a leaf is (``client_of``), checked against the AS that must
have issued it — this server's, or another domain's, fetched through federation.

Remote AS certificates are fetched before verification, all at once: the caller asks which
issuer domains a set of leaves needs (``issuers_needed``), ``prefetch``es them in one batch,
then verifies. A leaf whose issuer could not be fetched is refused (``UnknownIssuer``), never
retried.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from cryptography import x509

from roost.mls.constants import CredentialType
from roost.mls.credential import Credential
from roost.mls.errors import ValidationError
from roost.mls.proposals import Add

from ..auth.ca import client_id_of_certificate, verify_client_certificate
from ..auth.service import AuthService
from ..errors import Problem
from .federation_port import DsFederation

# A remote domain's AS certificate is re-read (through the federation directory's own cache)
# at most this often.
REMOTE_AS_TTL = 600.0
REMOTE_AS_CACHE_SIZE = 4096


class UnknownIssuer(ValueError):
    """The AS certificate of the domain that a leaf names is not available."""


class _ClientCache:
    """Bounded map leaf certificate -> (client id, key): X.509 checks are the costly part."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._map: OrderedDict[bytes, tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()  # used from the observer threads too

    def get(self, cert: bytes) -> tuple[str, bytes] | None:
        with self._lock:
            hit = self._map.get(cert)
            if hit is not None:
                self._map.move_to_end(cert)
            return hit

    def put(self, cert: bytes, value: tuple[str, bytes]) -> None:
        with self._lock:
            self._map[cert] = value
            if len(self._map) > self.size:
                self._map.popitem(last=False)


class Credentials:
    def __init__(
        self,
        home_domain: str,
        auth: AuthService,
        federation: DsFederation | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.domain = home_domain
        self.auth = auth
        self.federation = federation
        self.clock = clock
        self._clients = _ClientCache()
        self._remote_as: dict[str, tuple[bytes, float]] = {}

    def client_of(self, credential: Credential, signature_key: bytes) -> tuple[str, str]:
        """(client uuid, user id) of a leaf credential issued by its domain's AS; raises
        Problem ``credential_mismatch``."""
        if credential.credential_type != CredentialType.X509 or not credential.certificates:
            raise Problem(422, "credential_mismatch", "leaves need the AS-issued x509 credential")
        leaf = credential.certificates[0]
        hit = self._clients.get(leaf)
        if hit is None:
            try:
                hit = verify_client_certificate(leaf, self._issuer_for(leaf))
            except ValueError as e:  # UnknownIssuer too
                raise Problem(422, "credential_mismatch", str(e)) from None
            self._clients.put(leaf, hit)
        client_id, key = hit
        if key != signature_key:
            raise Problem(422, "credential_mismatch", "credential key differs from the leaf key")
        user_id, _, client_uuid = client_id.rpartition("/")
        return client_uuid, user_id

    def user_of_add(self, add: Add) -> str:
        """The user of an Add's client, from its verified leaf credential (the pipelines verify
        every added leaf before the role rules ask, so this is a cache hit)."""
        leaf = add.key_package.leaf_node
        return self.client_of(leaf.credential, leaf.signature_key)[1]

    def policy(self, credential: Credential, signature_key: bytes) -> bool:
        """An observer credential policy: every new or changed leaf carries a credential of
        its domain's AS (for a group's creation, where all leaves are checked at once)."""
        try:
            self.client_of(credential, signature_key)
        except Problem as p:
            raise ValidationError(p.detail) from None
        return True

    def issuers_needed(self, credentials: Iterable[Credential]) -> set[str]:
        """The other domains whose AS certificates verifying these leaves needs and that are
        not at hand (not fetched yet, or older than the TTL)."""
        needed: set[str] = set()
        if self.federation is None:
            return needed
        for credential in credentials:
            if credential.credential_type != CredentialType.X509 or not credential.certificates:
                continue
            leaf = credential.certificates[0]
            if self._clients.get(leaf) is not None:
                continue
            domain = self._issuer_domain(leaf)
            if domain and domain != self.domain and not self._fresh(domain):
                needed.add(domain)
        return needed

    async def prefetch(self, domains: Iterable[str]) -> None:
        """Fetch these domains' AS certificates, concurrently. A domain that refuses or cannot
        be reached is left out: its leaves are then refused (``UnknownIssuer``)."""
        federation = self.federation
        wanted = sorted(set(domains) - {self.domain, ""})
        if federation is None or not wanted:
            return

        async def fetch(domain: str) -> None:
            try:
                der = await federation.as_certificate(domain)
            except Problem:
                return
            self._remote_as[domain] = (der, self.clock())
            if len(self._remote_as) > REMOTE_AS_CACHE_SIZE:
                self._remote_as.pop(next(iter(self._remote_as)))

        await asyncio.gather(*(fetch(d) for d in wanted))

    def _fresh(self, domain: str) -> bool:
        hit = self._remote_as.get(domain)
        return hit is not None and self.clock() - hit[1] <= REMOTE_AS_TTL

    @staticmethod
    def _issuer_domain(leaf_der: bytes) -> str:
        try:
            client_id = client_id_of_certificate(x509.load_der_x509_certificate(leaf_der))
        except ValueError:
            client_id = None
        return (client_id or "").partition("/")[0].rpartition("@")[2]

    def _issuer_for(self, leaf_der: bytes) -> bytes:
        """The AS certificate that must have issued ``leaf_der``: the one of the domain its
        client id names (ours, or a prefetched remote one, even if older than the TTL)."""
        domain = self._issuer_domain(leaf_der)
        if not domain or domain == self.domain or self.federation is None:
            return self.auth.ca.certificate_der  # type: ignore[union-attr]
        hit = self._remote_as.get(domain)
        if hit is None:
            raise UnknownIssuer(f"the AS certificate of {domain} is not available")
        return hit[0]
