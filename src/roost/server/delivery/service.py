"""Delivery Service: groups, commits (one per epoch), ordered fan-out, roles, server notices.

``DeliveryService`` is the facade the routes and other modules use. It builds, at
construction, the collaborators that do the work — one job each, named by their files — and
hands each only the others it needs:

- ``group_store.py``: group rows, members, roles, the consistent snapshot, the member cache
- ``at_rest.py``: who is in a group, sealed at rest (no readable user, client or queue)
- ``credentials.py``: which client a leaf is; remote AS certificates, fetched in one batch
- ``external_sender.py``: the homeserver's key in the groups' external_senders; notices
- ``rules.py``: role rules, the connection requirement for Adds, the epoch-window rule
- ``fanout.py``: one item to the members' queues (local, remote through the outbox, held)
- ``groups.py``: creation, views, GroupInfo, a joiner's queue registration
- ``commits.py``: the commit pipeline, on the staged observer; ``welcomes.py``: its Welcome
- ``handshake.py``: a handshake as received (PublicMessage), MLS refusals as problems
- ``proposals.py``: member proposals and the server's own Remove proposals
- ``sends.py`` + ``send_writer.py``: application sends, parsed once, written in batches
- ``admin.py``: roles, settings, policy, deletion
- ``succession.py``: a group always has an admin (the longest-standing member is promoted)
- ``account_events.py``: deleted clients and users, notices, pruning (background task)
- ``forgotten_domains.py``: members of domains the operator forgot leave (run by that task)

Every group is followed by a ``GroupObserver`` whose state lives in ``ds_groups.state``: a
handshake is checked on a freshly loaded observer outside the write transaction (CPU work), and
the result is stored by a *conditional* update — on the epoch for commits (first commit of an
epoch wins, atomically, on both engines), on ``rev`` for proposals (lost updates retried). The
same update bumps ``last_seq``, the group-wide order shared by every item the group fans out,
and the fan-out rows are written in that transaction, so order, state and delivery commit
together or not at all.

Federation reaches the DS only through the ``DsFederation`` given here at construction
(``federation_port.py``); without it, remote members' items are dropped with a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..auth.service import AuthService, Principal
from ..config import Config
from ..connections.service import ConnectionService
from ..queues.service import QueueService
from ..seal_key import SealKeyFile
from ..store import Database
from ..store.async_engine import AsyncConnection
from .account_events import AccountEvents
from .admin import GroupAdmin
from .at_rest import AtRest
from .commits import CommitPipeline
from .credentials import Credentials
from .external_sender import ExternalSender
from .fanout import Fanout
from .federation_port import DsFederation, RemotePrincipal
from .forgotten_domains import ForgottenDomains
from .group_events import GroupEvents
from .group_keyring import GroupKeyring
from .group_store import GroupStore, GroupView
from .groups import Groups
from .keys import ServerKey, ServerKeys
from .proposals import Proposals
from .rules import AddRule
from .send_writer import SendWriter
from .sends import read_app_header
from .succession import AdminSuccession
from .welcomes import Welcomes

__all__ = ["DeliveryService", "DsFederation", "GroupView", "RemotePrincipal"]


class DeliveryService:
    def __init__(
        self,
        db: Database,
        config: Config,
        auth: AuthService,
        queues: QueueService,
        connections: ConnectionService,
        seal_key: SealKeyFile,
        clock: Callable[[], float] = time.time,
        federation: DsFederation | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.domain = config.home_domain
        self.clock = clock
        keys = ServerKeys(db, lambda: auth.ca, clock)  # type: ignore[arg-type, return-value]
        self.store = GroupStore(db, AtRest(seal_key, GroupKeyring(seal_key)))
        self.credentials = Credentials(self.domain, auth, federation, clock)
        self.external_sender_keys = ExternalSender(keys)
        self.add_rule = AddRule(db, self.domain, auth, connections, self.store)
        fanout = Fanout(queues, federation, self.store, config.limits.max_held_per_leaf)
        succession = AdminSuccession(self.store, fanout, self.now)
        self.groups = Groups(
            db,
            self.domain,
            self.store,
            self.credentials,
            self.external_sender_keys,
            fanout,
            queues,
            self.now,
        )
        self.proposals = Proposals(
            db, self.store, self.credentials, self.external_sender_keys, self.add_rule, fanout
        )
        self.group_events = GroupEvents(
            db,
            seal_key,
            self.store,
            self.external_sender_keys,
            fanout,
            succession,
            self.proposals.issue_removes,
            clock,
        )
        self.store.on_key_learned = self._key_learned
        self.account_events = AccountEvents(
            db,
            auth,
            self.store,
            self.group_events,
            self.proposals.issue_removes,
            clock,
            sweep_forgotten=None if federation is None else ForgottenDomains(federation).process,
        )
        self.commits = CommitPipeline(
            db,
            self.domain,
            self.store,
            self.credentials,
            self.external_sender_keys,
            self.add_rule,
            fanout,
            Welcomes(self.domain, queues, fanout, self.now),
            queues,
            succession,
            self.account_events.wake,
            self.now,
        )
        self.sends = SendWriter(db, self.store, fanout, queues, self.now)
        self.admin = GroupAdmin(db, self.store, self.external_sender_keys, fanout, self.now)

    def now(self) -> int:
        return int(self.clock())

    async def _key_learned(self, group_id: bytes) -> None:
        """The first request with a group's key since this process started (or evicted it):
        what the group could not be given without it, before the request is served."""
        await self.group_events.catch_up(group_id)
        await self.proposals.issue_removes(group_id)

    # ---- groups ---------------------------------------------------------------------------------

    async def external_sender(self, cipher_suite: int) -> ServerKey:
        return await self.external_sender_keys.key(cipher_suite)

    async def create_group(
        self,
        p: Principal,
        body: bytes,
        queue_id: bytes,
        queue_key: bytes | None,
        external_join: bool,
        group_key: bytes | None = None,
    ) -> GroupView:
        return await self.groups.create(p, body, queue_id, queue_key, external_join, group_key)

    async def list_groups(self, p: Principal) -> list[GroupView]:
        return await self.groups.of_client(p)

    async def get_group(
        self, p: Principal, group_id: bytes, group_key: bytes | None = None
    ) -> GroupView:
        await self.store.require_key(group_id, group_key)
        return await self.groups.get(p, group_id)

    async def group_state(
        self, p: Principal, group_id: bytes, group_key: bytes | None = None
    ) -> bytes:
        await self.store.require_key(group_id, group_key)
        return await self.groups.state(p, group_id)

    async def register_queue(
        self,
        p: Principal,
        group_id: bytes,
        queue_id: bytes,
        queue_key: bytes | None,
        group_key: bytes | None = None,
    ) -> None:
        await self.store.require_key(group_id, group_key)
        await self.groups.register_queue(p, group_id, queue_id, queue_key)

    async def client_uuid_taken(
        self, conn: AsyncConnection, client_uuid: str, user_id: str
    ) -> bool:
        return await self.add_rule.client_uuid_taken(conn, client_uuid, user_id)

    # ---- handshakes and application messages ----------------------------------------------------

    async def submit_commit(
        self,
        p: Principal,
        group_id: bytes,
        body: bytes,
        queue_id: bytes | None,
        queue_key: bytes | None = None,
        group_key: bytes | None = None,
        group_key_wrap: bytes | None = None,
    ) -> tuple[int, int]:
        await self.store.require_key(group_id, group_key)
        return await self.commits.submit(p, group_id, body, queue_id, queue_key, group_key_wrap)

    async def submit_proposal(
        self, p: Principal, group_id: bytes, body: bytes, group_key: bytes | None = None
    ) -> int:
        await self.store.require_key(group_id, group_key)
        return await self.proposals.submit(p, group_id, body)

    async def send(
        self,
        p: Principal,
        group_id: bytes,
        message_id: str,
        body: bytes,
        group_key: bytes | None = None,
    ) -> int:
        header = read_app_header(body, group_id)
        await self.store.require_key(group_id, group_key)
        return await self.sends.submit(p, group_id, message_id, header, body)

    # ---- administration -------------------------------------------------------------------------

    async def set_role(
        self,
        p: Principal,
        group_id: bytes,
        user_id: str,
        role: str,
        group_key: bytes | None = None,
    ) -> None:
        await self.store.require_key(group_id, group_key)
        await self.admin.set_role(p, group_id, user_id, role)

    async def update_settings(
        self, p: Principal, group_id: bytes, external_join: bool, group_key: bytes | None = None
    ) -> GroupView:
        await self.store.require_key(group_id, group_key)
        return await self.admin.update_settings(p, group_id, external_join)

    async def set_policy(
        self, p: Principal, group_id: bytes, policy: str | None, group_key: bytes | None = None
    ) -> None:
        await self.store.require_key(group_id, group_key)
        await self.admin.set_policy(p, group_id, policy)

    async def delete_group(
        self, p: Principal, group_id: bytes, group_key: bytes | None = None
    ) -> None:
        await self.store.require_key(group_id, group_key)
        await self.admin.delete_group(p, group_id)

    # ---- account events (background task) -------------------------------------------------------

    def install_hooks(self) -> None:
        self.account_events.install_hooks()

    def wake_events(self) -> None:
        self.account_events.wake()

    async def start(self) -> None:
        await self.account_events.start()

    async def stop(self) -> None:
        await self.account_events.stop()

    async def process_account_events(self) -> int:
        return await self.account_events.process()

    async def prune(self) -> int:
        return await self.account_events.prune()

    async def issue_removes(self, group_id: bytes) -> int:
        return await self.proposals.issue_removes(group_id)
