"""Domain -> base URL of its homeserver (docs/federation.md, docs/operations.md).

``federation_resolve`` maps a domain to ``host:port`` (tests, private deployments); otherwise
the domain itself is the host. Plain ``http://`` only for ``federation_insecure_domains``.
"""

from __future__ import annotations

from ..config import Config


class Resolver:
    def __init__(self, config: Config) -> None:
        self._overrides = {k.lower(): v for k, v in config.federation_resolve.items()}
        self._insecure = frozenset(d.lower() for d in config.federation_insecure_domains)

    def base_url(self, domain: str) -> str:
        """``scheme://host[:port]`` of ``domain``'s homeserver, without a trailing slash."""
        d = domain.lower()
        scheme = "http" if d in self._insecure else "https"
        return f"{scheme}://{self._overrides.get(d, d)}"
