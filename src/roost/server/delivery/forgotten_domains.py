"""Members of a domain the operator removed for good (``roost admin federation forget``) leave
every group hosted here (docs/federation.md, "Blocked, unreachable, forgotten").

The DS learns the forgotten domains through its ``DsFederation`` (given at construction). Each
newly forgotten domain becomes a ``domain_forgotten`` entry of the DS's group-event log, which
every group applies when the DS can open it (``group_events.py``): the domain's leaves gone
(the server's Remove proposals follow), their roles dropped, a signed notice to the remaining
members, and a successor if they held the only admin role. Run by the account-events consumer
(one at a time across processes).
"""

from __future__ import annotations

import logging

from .federation_port import DsFederation

log = logging.getLogger("roost.server.delivery")


class ForgottenDomains:
    def __init__(self, federation: DsFederation) -> None:
        self.federation = federation
        # Domains already logged by this process. Later members of such a domain cannot join
        # (the policy refuses it both ways), so one entry per forget (and per start) is enough:
        # applying it again finds none of its members.
        self._done: set[str] = set()

    async def process(self) -> set[str]:
        """The domains forgotten since the last call (to log)."""
        domains = await self.federation.forgotten_domains()
        self._done &= domains  # unblocked since: a new forget is logged again
        new = domains - self._done
        self._done |= new
        if new:
            log.info("%d forgotten domain(s): their members leave every group", len(new))
        return set(new)
