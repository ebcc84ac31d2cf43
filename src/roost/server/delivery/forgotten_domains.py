"""Members of a domain the operator removed for good (``roost admin federation forget``) leave
every group hosted here (docs/federation.md, "Blocked, unreachable, forgotten").

The DS learns the forgotten domains through its ``DsFederation`` (given at construction). For
each group with members of such a domain, one transaction marks their leaves gone — the same
path as deleted accounts take, so the server's Remove proposals follow from
``AccountEvents`` — and sends the remaining members a signed ``domain_forgotten`` notice.
Run by the account-events consumer (one at a time across processes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from roost.protocol.base64url import b64u

from ..store import Database
from .account_events import notice_in
from .external_sender import ExternalSender
from .fanout import Fanout
from .federation_port import DsFederation
from .group_store import GroupStore, Member
from .succession import AdminSuccession

log = logging.getLogger("roost.server.delivery")


class ForgottenDomains:
    def __init__(
        self,
        db: Database,
        federation: DsFederation,
        store: GroupStore,
        external_sender: ExternalSender,
        fanout: Fanout,
        succession: AdminSuccession,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.federation = federation
        self.store = store
        self.external_sender = external_sender
        self.fanout = fanout
        self.succession = succession
        self.clock = clock
        # Domains already swept by this process. Later members of such a domain cannot join
        # (the policy refuses it both ways), so one sweep per forget (and per start) is enough.
        self._done: set[str] = set()

    async def process(self) -> set[bytes]:
        """Sweep every newly forgotten domain; the groups whose members were marked gone."""
        domains = await self.federation.forgotten_domains()
        self._done &= domains  # unblocked since: a new forget sweeps again
        touched: set[bytes] = set()
        for domain in sorted(domains - self._done):
            touched |= await self._sweep(domain)
            self._done.add(domain)
        return touched

    @staticmethod
    def _of(domain: str) -> Callable[[Member], bool]:
        suffix = "@" + domain
        return lambda m: not m.gone and m.user_id.endswith(suffix)

    async def _sweep(self, domain: str) -> set[bytes]:
        async with self.db.engine.connect() as conn:
            gids = await self.store.groups_with(conn, self._of(domain))
        touched: set[bytes] = set()
        for gid in gids:
            if await self._leave(gid, domain):
                touched.add(gid)
        if touched:
            log.info("members of forgotten %s left %d group(s)", domain, len(touched))
        return touched

    async def _leave(self, gid: bytes, domain: str) -> bool:
        """One group: the domain's leaves gone, their roles dropped, the notice, and a successor
        if they held the only admin role — together."""
        async with self.db.engine.connect() as conn:
            row = await self.store.find_group(conn, gid)
            members = [] if row is None else await self.store.members(conn, gid)
            users = sorted({m.user_id for m in members if self._of(domain)(m)})
        if row is None or not users:
            return False
        notice = {
            "type": "domain_forgotten",
            "domain": domain,
            "user_ids": users,
            "group_id": b64u(gid),
            "at": int(self.clock()),
        }
        # Signed before the write transaction (the key may be read from the database).
        signed = await self.external_sender.signed_notice(row.cipher_suite, notice)
        key = await self.external_sender.key(row.cipher_suite)
        async with self.db.transaction() as conn:
            if not await self.store.mark_gone(conn, gid, self._of(domain)):
                return False  # another consumer was first
            await notice_in(conn, self.store, self.fanout, gid, signed, bump_rev=True)
            for user_id in users:
                await self.store.set_role(conn, gid, user_id, None)
            # The forgotten domain may have held the group's only admins.
            await self.succession.keep_admin_in(
                conn,
                gid,
                key,
                await self.store.members(conn, gid),
                await self.store.roles(conn, gid),
            )
        return True
