"""Federation: signed server-to-server requests, remote directories, the durable outbound queue
and the cross-domain flows of the AS and the DS (docs/federation.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .directory import RemoteDirectory
    from .identity import ServerIdentity
    from .inbound import InboundVerifier
    from .outbox import InboxDispatcher, Outbox
    from .policy import FederationPolicyStore
    from .resolver import Resolver
    from .transport import FederationClient


@dataclass(slots=True)
class FederationServices:
    """Everything federated flows use; built once per process by ``wiring.build_federation``."""

    identity: ServerIdentity
    policy: FederationPolicyStore
    directory: RemoteDirectory
    client: FederationClient
    outbox: Outbox
    inbox: InboxDispatcher
    resolver: Resolver
    verifier: InboundVerifier

    async def start(self) -> None:
        """Create the signing key if this is the first start, then start the outbox worker."""
        await self.identity.ensure_key()
        await self.outbox.start()

    async def stop(self) -> None:
        await self.outbox.stop()
        await self.client.aclose()
