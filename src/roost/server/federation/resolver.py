"""Domain -> base URL of its homeserver (docs/federation.md, docs/operations.md).

``federation_resolve`` maps a domain to ``host:port`` (tests, private deployments); otherwise
the domain itself is the host. Plain ``http://`` only for ``federation_insecure_domains``.
A domain's own name is checked by the outbound-address policy (outbound.py): in open
federation any remote user id names a host, so a name resolving to a private address is
refused; the operator's ``federation_resolve`` hosts are trusted as configured.
"""

from __future__ import annotations

from ..config import Config
from ..outbound import OutboundPolicy


class Resolver:
    def __init__(self, config: Config) -> None:
        self._overrides = {k.lower(): v for k, v in config.federation_resolve.items()}
        self._insecure = frozenset(d.lower() for d in config.federation_insecure_domains)

    def outbound_policy(self, allow_private: bool = False) -> OutboundPolicy:
        """The policy for federation traffic: the override hosts are the operator's choice."""
        hosts = [address.rpartition(":")[0] for address in self._overrides.values()]
        return OutboundPolicy(allow_private=allow_private, trusted_hosts=hosts)

    def base_url(self, domain: str) -> str:
        """``scheme://host[:port]`` of ``domain``'s homeserver, without a trailing slash."""
        d = domain.lower()
        scheme = "http" if d in self._insecure else "https"
        return f"{scheme}://{self._overrides.get(d, d)}"
