"""Groups as their members see them (docs/api.md "Groups"): creation from the epoch-0
GroupInfo, the views, the latest GroupInfo and tree, and a joiner's queue registration (its
held items move into the queue in group order)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace

import sqlalchemy as sa

from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES
from roost.mls.errors import MLSError, UnsupportedError
from roost.mls.group import GroupObserver
from roost.protocol.group_state import decode_group_state, encode_group_state
from roost.protocol.queue_item import encode_queue_item

from ..auth.service import Principal
from ..errors import Problem
from ..queues.service import QueueService
from ..store import Database
from .credentials import Credentials
from .external_sender import ExternalSender
from .fanout import Fanout
from .federation_port import RemotePrincipal
from .group_events import latest_event
from .group_info_check import check_extensions_of
from .group_key import key_check
from .group_store import GroupStore, GroupView, Member, check_group_id, leaf_of
from .rules import ADMIN
from .tables import ds_groups, ds_held, ds_members


class Groups:
    def __init__(
        self,
        db: Database,
        home_domain: str,
        store: GroupStore,
        credentials: Credentials,
        external_sender: ExternalSender,
        fanout: Fanout,
        queues: QueueService,
        now: Callable[[], int],
    ) -> None:
        self.db = db
        self.domain = home_domain
        self.store = store
        self.credentials = credentials
        self.external_sender = external_sender
        self.fanout = fanout
        self.queues = queues
        self.now = now

    async def create(
        self,
        p: Principal,
        body: bytes,
        queue_id: bytes,
        queue_key: bytes | None,
        external_join: bool,
        group_key: bytes | None = None,
    ) -> GroupView:
        """``group_key``: the key the members will present (only its check value is kept);
        None makes a group that asks for no key."""
        bundle = decode_group_state(body)
        check_extensions_of(bundle.group_info)
        try:
            obs = GroupObserver.from_group_info(
                bundle.group_info, bundle.ratchet_tree, credential_policy=self.credentials.policy
            )
            # The GroupInfo is served as stored: a ratchet_tree in it must be the group's.
            obs.check_group_info(bundle.group_info)
        except UnsupportedError as e:
            raise Problem(422, "unsupported_cipher_suite", str(e)) from None
        except MLSError as e:
            raise Problem(422, "invalid_group", f"{type(e).__name__}: {e}") from None
        group_id = obs.group_id
        check_group_id(group_id, self.domain)
        if obs.group_context.cipher_suite not in SUPPORTED_SUITES:
            raise Problem(422, "unsupported_cipher_suite", "cipher suite not offered here")
        roster = obs.roster()
        if obs.epoch != 0 or len(roster) != 1:
            raise Problem(422, "invalid_group", "a new group is at epoch 0 with one member")
        leaf, credential, key = roster[0]
        client_uuid, user_id = self.credentials.client_of(credential, key)
        if client_uuid != p.client_uuid:
            raise Problem(422, "credential_mismatch", "the creator's leaf is not the caller")
        await self.external_sender.require_in(obs)
        # Sealed under its key, which the process holds once the group exists (a request naming
        # an existing group cannot put its own key in place of the group's).
        held = None if group_key is None else self.store.at_rest.keyring.derive(group_id, group_key)
        with self.store.at_rest.sealing_under(group_id, held):
            async with self.db.transaction() as conn:
                await self.queues.check_key(conn, queue_id, queue_key)
                exists = (
                    await conn.execute(sa.select(ds_groups.c.id).where(ds_groups.c.id == group_id))
                ).first()
                if exists is not None:
                    raise Problem(409, "group_exists", "a group with this id exists")
                self.store.at_rest.keyring.drop(group_id)  # a deleted group's key, if any
                await conn.execute(
                    sa.insert(ds_groups).values(
                        id=group_id,
                        cipher_suite=obs.group_context.cipher_suite,
                        epoch=0,
                        last_seq=0,
                        # A random start: a re-created group id never matches a cached member list.
                        rev=secrets.randbits(48),
                        external_join=external_join,
                        **self.store.sealed_state(group_id, obs.to_bytes(), bundle.group_info),
                        last_commit_hash=None,
                        last_commit_seq=0,
                        created_at=self.now(),
                        key_check=None if group_key is None else key_check(group_key),
                        key_sealed=group_key is not None,
                        # Events logged before the group existed do not concern it.
                        events_seen=await latest_event(conn),
                    )
                )
                creator = Member(leaf, client_uuid, user_id, queue_id, None, False, None, 0)
                await conn.execute(
                    sa.insert(ds_members).values(self.store.member_row(group_id, creator))
                )
                await self.store.set_role(conn, group_id, user_id, ADMIN)
        if held is not None:
            self.store.at_rest.keyring.remember(group_id, held)
        return GroupView(
            group_id,
            obs.group_context.cipher_suite,
            0,
            0,
            external_join,
            {user_id: ADMIN},
            leaf,
        )

    async def of_client(self, p: Principal) -> list[GroupView]:
        async with self.db.engine.connect() as conn:
            out = []
            for gid in await self.store.groups_of_client(conn, p.client_uuid, p.user_id):
                out.append(
                    await self.store.view(
                        conn, await self.store.group(conn, gid), (p.client_uuid, p.user_id)
                    )
                )
            return out

    async def get(self, p: Principal, group_id: bytes) -> GroupView:
        async with self.db.engine.connect() as conn:
            row = await self.store.group(conn, group_id)
            view = await self.store.view(conn, row, (p.client_uuid, p.user_id))
        if view.my_leaf is None:
            raise Problem(403, "not_member", "the calling client holds no leaf in this group")
        return view

    async def state(self, p: Principal, group_id: bytes) -> bytes:
        """``RoostGroupState`` for members (fresh joiners included) or, if the group allows
        external joins, any authenticated client."""
        async with self.db.engine.connect() as conn:
            row = await self.store.group(conn, group_id)
            if not row.external_join:
                members = await self.store.members(conn, group_id)
                if leaf_of(members, p.client_uuid, p.user_id) is None:
                    raise Problem(403, "not_member", "not a member of this group")
        obs = GroupObserver.from_bytes(self.store.state_of(row))
        return encode_group_state(self.store.group_info_of(row), obs.tree.to_bytes())

    async def register_queue(
        self, p: Principal, group_id: bytes, queue_id: bytes, queue_key: bytes | None
    ) -> None:
        async with self.db.transaction() as conn:
            row = await self.store.group(conn, group_id)
            # Lock order everywhere: the group row, then member rows, then queue counters.
            await self.store.bump_rev(conn, group_id)
            queue_domain = p.domain if isinstance(p, RemotePrincipal) else None
            if queue_domain is None:  # a remote member's own server checked the key
                await self.queues.check_key(conn, queue_id, queue_key)
            members = await self.store.members(conn, group_id)
            mine = leaf_of(members, p.client_uuid, p.user_id)
            if mine is None:
                raise Problem(403, "not_member", "the calling client holds no leaf in this group")
            await self.store.update_member(
                conn, group_id, replace(mine, queue_id=queue_id, queue_domain=queue_domain)
            )
            held = list(
                await conn.execute(
                    sa.select(ds_held.c.group_seq, ds_held.c.item_type, ds_held.c.body)
                    .where(ds_held.c.group_id == group_id, ds_held.c.leaf_index == mine.leaf_index)
                    .order_by(ds_held.c.group_seq)
                )
            )
            policy = mine.policy.encode() if mine.policy else b""
            queued = [
                (queue_id, encode_queue_item(row.id, h.group_seq, policy, h.item_type, h.body))
                for h in held
            ]
            if queue_domain is not None:
                if queued:
                    await self.fanout.remote_items(conn, group_id, {queue_domain: queued})
            else:
                for qid, item in queued:
                    await self.queues.enqueue_in(conn, qid, item, None)
            if held:
                await conn.execute(
                    sa.delete(ds_held).where(
                        ds_held.c.group_id == group_id, ds_held.c.leaf_index == mine.leaf_index
                    )
                )
