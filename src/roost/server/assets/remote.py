"""The narrow interface through which the asset service reaches assets held by other domains
(implemented over signed federation requests by ``federation/asset_flows.py``).

A client only ever talks to its own homeserver: for a reference naming another
domain, this server fetches the ciphertext from that domain and relays it, so the uploader's
server sees this server, never the recipient, and still only ever holds ciphertext.
"""

from __future__ import annotations

from typing import Protocol

from .storage import Blob


class RemoteAssetSource(Protocol):
    async def open(
        self, domain: str, asset_id: str, capability: str, *, max_bytes: int, timeout: float
    ) -> Blob:
        """The ciphertext of ``asset_id`` held by ``domain``, streamed: at most ``max_bytes``
        and within ``timeout`` seconds in all (a slower or larger answer is cut off). Raises
        a ``Problem``: the remote's ``asset_not_found`` passes through; a refusing policy is
        403 ``federation_refused``, an unreachable or misbehaving remote 502."""
        ...
