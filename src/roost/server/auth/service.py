"""Authentication Service: users, clients, credentials, tokens, discovery, account deletion.

Other modules talk to it only through the methods here (``authenticate``, ``find_user``,
``client_uuids_of``, ``get_client``) and the deletion hooks they register; none of them reads
these tables directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from roost.mls.codec import Writer
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import UnsupportedError
from roost.protocol.base64url import b64u, unb64u

from ..config import Config, is_valid_domain
from ..errors import Problem
from ..store import Database
from ..store.async_engine import AsyncConnection
from . import ids
from .ca import CertificateAuthority, InvalidSignatureKey, mls_public_key_to_x509
from .public import PublicClient, PublicUser, RemoteUsers
from .tables import (
    account_events,
    as_keys,
    auth_challenges,
    auth_tokens,
    client_requests,
    clients,
    realtime_tickets,
    registration_tokens,
    retired_names,
    users,
)

AUTH_LABEL = b"roost auth"
PROOF_LABEL = b"roost client key"
CHALLENGE_TTL = 60
CLIENT_REQUEST_TTL = 600

ClientRemovedHook = Callable[[AsyncConnection, str], Awaitable[None]]
UserDeletedHook = Callable[[AsyncConnection, str, list[str]], Awaitable[None]]
# (conn, event_type, user_id, payload): an account event was written in ``conn``'s transaction.
AccountEventHook = Callable[[AsyncConnection, str, str, dict], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    user_uuid: str
    name: str
    user_id: str
    client_uuid: str
    client_id: str


@dataclass(frozen=True, slots=True)
class ClientKey:
    cipher_suite: int
    signature_key: bytes
    proof: bytes


@dataclass(frozen=True, slots=True)
class UserInfo:
    uuid: str
    name: str
    user_id: str
    display_name: str | None
    discoverable: bool


@dataclass(frozen=True, slots=True)
class ClientInfo:
    uuid: str
    client_id: str
    cipher_suite: int
    signature_key: bytes
    certificate: bytes
    created_at: int


def _suspended() -> Problem:
    # Set by `roost admin users suspend` (operator/): no tokens, no requests, no new clients.
    return Problem(403, "account_suspended", "this account is suspended by the operator")


def _hash(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def token_hash(token: str) -> bytes | None:
    """What the database keeps of a bearer token (None: not a well-formed token)."""
    try:
        raw = unb64u(token)
    except ValueError:
        return None
    return _hash(raw) if len(raw) == 32 else None


def _tls_strings(*parts: bytes) -> bytes:
    w = Writer()
    for p in parts:
        w.opaque(p)
    return w.getvalue()


def auth_content(domain: str, client_id: str, nonce: bytes) -> bytes:
    """The content a client signs (label "roost auth") to get a bearer token."""
    return _tls_strings(domain.encode(), client_id.encode(), nonce)


def proof_content(domain: str, user_id: str, signature_key: bytes) -> bytes:
    """The content of a proof of possession (label "roost client key")."""
    return _tls_strings(domain.encode(), user_id.encode(), signature_key)


class AuthService:
    def __init__(
        self,
        db: Database,
        config: Config,
        clock: Callable[[], float] = time.time,
        remote: RemoteUsers | None = None,
    ):
        self.db = db
        self.config = config
        self.domain = config.home_domain
        self.clock = clock
        # Lookups of users of other domains (federation); None: such users are refused.
        self.remote = remote
        self.ca: CertificateAuthority | None = None
        self.on_client_removed: list[ClientRemovedHook] = []
        self.on_user_deleted: list[UserDeletedHook] = []
        self.on_client_added: list[ClientRemovedHook] = []
        self.on_account_event: list[AccountEventHook] = []
        # argon2id with the library defaults (RFC 9106 "second recommended" profile)
        self._hasher = PasswordHasher()

    def now(self) -> int:
        return int(self.clock())

    # ---- certificate authority -------------------------------------------------------------

    async def ensure_ca(self) -> CertificateAuthority:
        """Load the AS key for this domain, creating it on first start."""
        async with self.db.transaction() as conn:
            row = (
                await conn.execute(sa.select(as_keys).where(as_keys.c.domain == self.domain))
            ).first()
            if row is None:
                ca = CertificateAuthority.generate(self.domain)
                next_id = (
                    await conn.execute(sa.select(sa.func.coalesce(sa.func.max(as_keys.c.id), 0)))
                ).scalar_one() + 1
                await conn.execute(
                    sa.insert(as_keys).values(
                        id=next_id,
                        domain=self.domain,
                        private_key=ca.private_key_der(),
                        certificate=ca.certificate_der,
                        created_at=self.now(),
                    )
                )
            else:
                ca = CertificateAuthority.load(self.domain, row.private_key, row.certificate)
        self.ca = ca
        return ca

    def _issue(self, client_id: str, key: ClientKey) -> bytes:
        assert self.ca is not None, "ensure_ca() runs at start-up"
        return self.ca.issue_client_certificate(
            client_id, key.cipher_suite, key.signature_key, self.config.client_certificate_days
        )

    # ---- validation helpers ----------------------------------------------------------------

    def check_client_key(self, key: ClientKey, user_id: str) -> None:
        try:
            cs = get_cipher_suite(key.cipher_suite)
        except UnsupportedError:
            raise Problem(
                422, "unsupported_cipher_suite", f"cipher suite {key.cipher_suite} is not supported"
            ) from None
        try:
            mls_public_key_to_x509(key.cipher_suite, key.signature_key)
        except InvalidSignatureKey as e:
            raise Problem(422, "invalid_signature_key", str(e)) from None
        content = proof_content(self.domain, user_id, key.signature_key)
        if not cs.verify_with_label(key.signature_key, PROOF_LABEL, content, key.proof):
            raise Problem(422, "invalid_proof", "the proof of possession does not verify")

    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify_password(self, stored: str | None, password: str) -> bool:
        if stored is None:
            # Spend comparable time so a missing account or password does not show in timing.
            await asyncio.to_thread(self._dummy_verify, password)
            return False
        try:
            return await asyncio.to_thread(self._hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _dummy_verify(self, password: str) -> None:
        with contextlib.suppress(VerificationError, InvalidHashError):
            self._hasher.verify(_dummy_hash(), password)

    # ---- registration and clients ----------------------------------------------------------

    async def register(
        self,
        name: str,
        key: ClientKey,
        *,
        display_name: str | None,
        password: str | None,
        registration_token: str | None,
        discoverable: bool,
    ) -> tuple[UserInfo, ClientInfo]:
        name = ids.normalize_name(name)
        uid = ids.user_id(name, self.domain)
        self.check_client_key(key, uid)
        password_hash = await self.hash_password(password) if password else None
        user_uuid = str(uuid.uuid4())
        client_uuid = str(uuid.uuid4())
        cid = ids.client_id(name, self.domain, client_uuid)
        cert = self._issue(cid, key)
        now = self.now()
        try:
            async with self.db.transaction() as conn:
                if self.config.registration_policy == "token":
                    await self._use_registration_token(conn, registration_token)
                if not await insert_user(
                    conn, user_uuid, name, display_name, discoverable, password_hash, now
                ):
                    raise Problem(409, "user_exists", f"the user name {name} is taken")
                await self._insert_client(conn, user_uuid, client_uuid, key, cert, now)
        except IntegrityError:
            # A concurrent registration won the name or the key between check and insert.
            raise Problem(409, "user_exists", "the user name or signature key is taken") from None
        user = UserInfo(user_uuid, name, uid, display_name, discoverable)
        return user, ClientInfo(client_uuid, cid, key.cipher_suite, key.signature_key, cert, now)

    async def _use_registration_token(self, conn: AsyncConnection, token: str | None) -> None:
        bad = Problem(403, "registration_token_invalid", "a valid registration token is required")
        if not token:
            raise bad
        h = _hash(token.encode())
        row = (
            await conn.execute(
                sa.select(registration_tokens).where(registration_tokens.c.token_hash == h)
            )
        ).first()
        if row is None or (row.expires_at is not None and row.expires_at <= self.now()):
            raise bad
        if row.uses_left is not None:
            if row.uses_left <= 0:
                raise bad
            await conn.execute(
                sa.update(registration_tokens)
                .where(registration_tokens.c.token_hash == h)
                .values(uses_left=registration_tokens.c.uses_left - 1)
            )

    async def create_registration_token(
        self, uses: int | None = 1, ttl_seconds: int | None = None
    ) -> str:
        token = secrets.token_urlsafe(24)
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.insert(registration_tokens).values(
                    token_hash=_hash(token.encode()),
                    uses_left=uses,
                    expires_at=None if ttl_seconds is None else self.now() + ttl_seconds,
                    created_at=self.now(),
                )
            )
        return token

    async def _insert_client(
        self,
        conn: AsyncConnection,
        user_uuid: str,
        client_uuid: str,
        key: ClientKey,
        cert: bytes,
        now: int,
    ) -> None:
        count = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(clients)
                .where(clients.c.user_uuid == user_uuid)
            )
        ).scalar_one()
        if count >= self.config.limits.max_clients_per_user:
            raise Problem(409, "too_many_clients", "the user has the maximum number of clients")
        taken = await conn.execute(
            sa.select(clients.c.uuid).where(clients.c.signature_key == key.signature_key)
        )
        if taken.first() is not None:
            raise Problem(
                409, "signature_key_in_use", "this signature key belongs to another client"
            )
        await conn.execute(
            sa.insert(clients).values(
                uuid=client_uuid,
                user_uuid=user_uuid,
                cipher_suite=key.cipher_suite,
                signature_key=key.signature_key,
                certificate=cert,
                created_at=now,
            )
        )
        for hook in self.on_client_added:
            await hook(conn, client_uuid)

    async def add_client_with_password(
        self, user_id_text: str, password: str, key: ClientKey
    ) -> ClientInfo:
        user = await self.find_user(user_id_text)
        stored = found = None
        if user is not None:
            async with self.db.engine.connect() as conn:
                found = (
                    await conn.execute(
                        sa.select(users.c.password_hash, users.c.suspended_at).where(
                            users.c.uuid == user.uuid
                        )
                    )
                ).first()
                stored = found.password_hash if found is not None else None
        if not await self.verify_password(stored, password) or user is None:
            raise Problem(403, "invalid_password", "wrong user id or password")
        if found is not None and found.suspended_at is not None:
            raise _suspended()
        self.check_client_key(key, user.user_id)
        return await self._create_client(user, key)

    async def _create_client(
        self, user: UserInfo, key: ClientKey, approving: bytes | None = None
    ) -> ClientInfo:
        """Insert a client; with ``approving`` (a request's id hash) also settle that request
        in the same transaction, so a request is approved at most once."""
        client_uuid = str(uuid.uuid4())
        cid = ids.client_id(user.name, self.domain, client_uuid)
        cert = self._issue(cid, key)
        now = self.now()
        try:
            async with self.db.transaction() as conn:
                exists = await conn.execute(
                    sa.select(users.c.uuid).where(users.c.uuid == user.uuid)
                )
                if exists.first() is None:
                    raise Problem(404, "user_not_found", f"no user {user.user_id}")
                if approving is not None:
                    settled = await conn.execute(
                        sa.update(client_requests)
                        .where(
                            client_requests.c.id_hash == approving,
                            client_requests.c.state == "pending",
                        )
                        .values(state="approved", client_uuid=client_uuid)
                    )
                    if settled.rowcount != 1:
                        raise Problem(404, "request_not_found", "the request was already decided")
                await self._insert_client(conn, user.uuid, client_uuid, key, cert, now)
        except IntegrityError:
            raise Problem(409, "signature_key_in_use", "this signature key is in use") from None
        return ClientInfo(client_uuid, cid, key.cipher_suite, key.signature_key, cert, now)

    async def create_client_request(
        self, user_id_text: str, key: ClientKey, device_name: str | None
    ) -> tuple[str, int]:
        user = await self.find_user(user_id_text)
        if user is None:
            raise Problem(404, "user_not_found", f"no user {user_id_text}")
        self.check_client_key(key, user.user_id)
        request_id = secrets.token_bytes(32)
        now = self.now()
        expires = now + CLIENT_REQUEST_TTL
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.delete(client_requests).where(client_requests.c.expires_at <= now)
            )
            await conn.execute(
                sa.insert(client_requests).values(
                    id_hash=_hash(request_id),
                    public_id=str(uuid.uuid4()),
                    user_uuid=user.uuid,
                    cipher_suite=key.cipher_suite,
                    signature_key=key.signature_key,
                    device_name=device_name,
                    state="pending",
                    client_uuid=None,
                    created_at=now,
                    expires_at=expires,
                )
            )
        return b64u(request_id), expires

    async def list_client_requests(self, principal: Principal) -> list[sa.Row]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(client_requests)
                .where(
                    client_requests.c.user_uuid == principal.user_uuid,
                    client_requests.c.state == "pending",
                    client_requests.c.expires_at > self.now(),
                )
                .order_by(client_requests.c.created_at)
            )
            return list(rows)

    async def decide_client_request(
        self, principal: Principal, public_id: str, approve: bool
    ) -> ClientInfo | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(client_requests).where(
                        client_requests.c.public_id == public_id,
                        client_requests.c.user_uuid == principal.user_uuid,
                        client_requests.c.state == "pending",
                        client_requests.c.expires_at > self.now(),
                    )
                )
            ).first()
        if row is None:  # another user's request answers as an unknown one: no disclosure
            raise Problem(404, "request_not_found", "no pending client request with this id")
        if approve:
            user = await self.find_user(principal.user_id)
            assert user is not None
            key = ClientKey(row.cipher_suite, row.signature_key, b"")
            return await self._create_client(user, key, approving=row.id_hash)
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(client_requests)
                .where(
                    client_requests.c.id_hash == row.id_hash, client_requests.c.state == "pending"
                )
                .values(state="rejected")
            )
        return None

    async def poll_client_request(self, request_id: bytes) -> tuple[str, ClientInfo | None]:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(client_requests).where(client_requests.c.id_hash == _hash(request_id))
                )
            ).first()
        if row is None or (row.state == "pending" and row.expires_at <= self.now()):
            raise Problem(404, "request_not_found", "no client request with this id")
        client = await self.get_client(row.client_uuid) if row.client_uuid else None
        return row.state, client

    async def remove_client(self, principal: Principal, client_uuid: str) -> None:
        async with self.db.transaction() as conn:
            rows = (
                await conn.execute(
                    sa.select(clients.c.uuid).where(clients.c.user_uuid == principal.user_uuid)
                )
            ).all()
            own = {r.uuid for r in rows}
            if client_uuid not in own:
                if await self.get_client(client_uuid, conn) is not None:
                    raise Problem(403, "forbidden", "the client belongs to another user")
                raise Problem(404, "client_not_found", "no such client")
            if len(own) == 1:
                raise Problem(
                    409,
                    "last_client",
                    "a user keeps at least one client; delete the account instead",
                )
            for hook in self.on_client_removed:
                await hook(conn, client_uuid)
            await conn.execute(
                sa.delete(auth_tokens).where(auth_tokens.c.client_uuid == client_uuid)
            )
            await conn.execute(sa.delete(clients).where(clients.c.uuid == client_uuid))
            await self._record_event(
                conn,
                "client_removed",
                principal.user_id,
                {"client_id": ids.client_id(principal.name, self.domain, client_uuid)},
            )

    async def delete_account(self, principal: Principal) -> None:
        async with self.db.transaction() as conn:
            client_uuids = [
                r.uuid
                for r in await conn.execute(
                    sa.select(clients.c.uuid).where(clients.c.user_uuid == principal.user_uuid)
                )
            ]
            # Before the hooks: account-event hooks read what they delete (connections).
            await self._record_event(
                conn,
                "user_deleted",
                principal.user_id,
                {
                    "user_id": principal.user_id,
                    "user_uuid": principal.user_uuid,
                    "client_ids": [
                        ids.client_id(principal.name, self.domain, c) for c in client_uuids
                    ],
                },
            )
            for hook in self.on_user_deleted:
                await hook(conn, principal.user_uuid, client_uuids)
            for table in (auth_tokens,):
                await conn.execute(sa.delete(table).where(table.c.client_uuid.in_(client_uuids)))
            await conn.execute(
                sa.delete(client_requests).where(client_requests.c.user_uuid == principal.user_uuid)
            )
            await conn.execute(sa.delete(clients).where(clients.c.user_uuid == principal.user_uuid))
            await conn.execute(sa.delete(users).where(users.c.uuid == principal.user_uuid))
            await conn.execute(
                sa.insert(retired_names).values(name=principal.name, retired_at=self.now())
            )

    async def _record_event(
        self, conn: AsyncConnection, event_type: str, user_id: str, payload: dict
    ) -> None:
        await self._insert_event(conn, event_type, user_id, payload)
        for hook in self.on_account_event:  # e.g. federation tells the user's other domains
            await hook(conn, event_type, user_id, payload)

    async def record_remote_account_event(
        self, conn: AsyncConnection, event_type: str, user_id: str, payload: dict
    ) -> None:
        """An account event of a user of another domain (federation inbox): queued for this
        server's Delivery Service like a local one, without the ``on_account_event`` hooks."""
        await self._insert_event(conn, event_type, user_id, payload)

    async def _insert_event(
        self, conn: AsyncConnection, event_type: str, user_id: str, payload: dict
    ) -> None:
        await conn.execute(
            sa.insert(account_events).values(
                event_type=event_type,
                user_id=user_id,
                payload=json.dumps(payload, sort_keys=True),
                created_at=self.now(),
            )
        )

    async def pending_account_events(self, limit: int = 100) -> list[sa.Row]:
        """The Delivery Service's view of the outbox (oldest first, not yet processed)."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(account_events).order_by(account_events.c.id).limit(limit)
            )
            return list(rows)

    async def drop_account_events(self, event_ids: list[int]) -> None:
        """The DS handled these events: they go (processed events are not kept)."""
        async with self.db.transaction() as conn:
            await conn.execute(sa.delete(account_events).where(account_events.c.id.in_(event_ids)))

    async def sweep(self) -> int:
        """Delete expired tokens, realtime tickets, challenges and client requests (periodic
        maintenance)."""
        now = self.now()
        removed = 0
        async with self.db.transaction() as conn:
            for table in (realtime_tickets, auth_tokens, auth_challenges, client_requests):
                result = await conn.execute(sa.delete(table).where(table.c.expires_at <= now))
                removed += result.rowcount or 0
        return removed

    # ---- request authentication ------------------------------------------------------------

    async def create_challenge(self, client_id_text: str) -> tuple[str, bytes, int]:
        client_uuid = None
        parsed = ids.parse_client_id(client_id_text)
        if parsed is not None and parsed[1] == self.domain:
            client = await self.get_client(parsed[2])
            if client is not None and client.client_id == ids.client_id(*parsed):
                client_uuid = client.uuid
        challenge_id = str(uuid.uuid4())
        nonce = secrets.token_bytes(32)
        now = self.now()
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.delete(auth_challenges).where(auth_challenges.c.expires_at <= now)
            )
            await conn.execute(
                sa.insert(auth_challenges).values(
                    id=challenge_id,
                    client_uuid=client_uuid,
                    nonce=nonce,
                    expires_at=now + CHALLENGE_TTL,
                )
            )
        return challenge_id, nonce, now + CHALLENGE_TTL

    async def issue_token(
        self, challenge_id: str, signature: bytes
    ) -> tuple[str, int, ClientInfo, str]:
        failed = Problem(401, "auth_failed", "challenge unknown, expired or signature invalid")
        now = self.now()
        async with self.db.transaction() as conn:
            row = (
                await conn.execute(
                    sa.delete(auth_challenges)
                    .where(auth_challenges.c.id == challenge_id)
                    .returning(
                        auth_challenges.c.client_uuid,
                        auth_challenges.c.nonce,
                        auth_challenges.c.expires_at,
                    )
                )
            ).first()
        if row is None or row.expires_at <= now or row.client_uuid is None:
            raise failed
        client = await self.get_client(row.client_uuid)
        if client is None:
            raise failed
        cs = get_cipher_suite(client.cipher_suite)
        content = auth_content(self.domain, client.client_id, row.nonce)
        if not cs.verify_with_label(client.signature_key, AUTH_LABEL, content, signature):
            raise failed
        token = secrets.token_bytes(32)
        expires = now + self.config.token_ttl_seconds
        async with self.db.transaction() as conn:
            await conn.execute(sa.delete(auth_tokens).where(auth_tokens.c.expires_at <= now))
            exists = (
                await conn.execute(
                    sa.select(users.c.suspended_at)
                    .join(clients, clients.c.user_uuid == users.c.uuid)
                    .where(clients.c.uuid == client.uuid)
                )
            ).first()
            if exists is None:
                raise failed
            if exists.suspended_at is not None:
                raise _suspended()
            await conn.execute(
                sa.insert(auth_tokens).values(
                    token_hash=_hash(token), client_uuid=client.uuid, expires_at=expires
                )
            )
        user_id = client.client_id.rsplit("/", 1)[0]
        return b64u(token), expires, client, user_id

    async def authenticate(self, token: str) -> Principal:
        """Resolve a bearer token; raises 401 problems."""
        return (await self.authenticate_bound(token))[0]

    async def authenticate_bound(self, token: str) -> tuple[Principal, bytes]:
        """Resolve a bearer token, with its hash (what a realtime socket stays bound to and
        re-checks with ``authenticate_token_hash``); raises 401 problems."""
        hashed = token_hash(token)
        if hashed is None:
            raise Problem(401, "unauthenticated", "invalid bearer token")
        return await self.authenticate_token_hash(hashed), hashed

    async def authenticate_token_hash(self, hashed: bytes) -> Principal:
        """Resolve a bearer token known by its hash (``token_hash``): a realtime socket opened
        with a ticket re-checks the token the ticket was issued with. Raises 401 problems."""
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        auth_tokens.c.token_hash,
                        auth_tokens.c.expires_at,
                        clients.c.uuid.label("client_uuid"),
                        users.c.uuid.label("user_uuid"),
                        users.c.name,
                        users.c.suspended_at,
                    )
                    .join(clients, clients.c.uuid == auth_tokens.c.client_uuid)
                    .join(users, users.c.uuid == clients.c.user_uuid)
                    .where(auth_tokens.c.token_hash == hashed)
                )
            ).first()
        # The lookup is by hash, so timing reveals nothing about the token; compare anyway.
        if row is None or not hmac.compare_digest(row.token_hash, hashed):
            raise Problem(401, "unauthenticated", "invalid bearer token")
        if row.expires_at <= self.now():
            raise Problem(401, "token_expired", "the bearer token has expired")
        if row.suspended_at is not None:
            raise _suspended()
        return Principal(
            row.user_uuid,
            row.name,
            ids.user_id(row.name, self.domain),
            row.client_uuid,
            ids.client_id(row.name, self.domain, row.client_uuid),
        )

    # ---- lookups (also the narrow interface for other modules) -----------------------------

    async def find_user(
        self, user_id_text: str, conn: AsyncConnection | None = None
    ) -> UserInfo | None:
        parsed = ids.parse_user_id(user_id_text)
        if parsed is None or parsed[1] != self.domain:
            return None
        query = sa.select(users).where(users.c.name == parsed[0])
        if conn is None:
            async with self.db.engine.connect() as c:
                row = (await c.execute(query)).first()
        else:
            row = (await conn.execute(query)).first()
        return None if row is None else self._user(row)

    def remote_domain(self, user_id: str) -> str | None:
        """The domain of a syntactically valid user id of another domain, else None (a
        malformed domain is then nobody's: 404, and nothing is sent anywhere)."""
        parsed = ids.parse_user_id(user_id)
        if parsed is None or parsed[1] == self.domain or not is_valid_domain(parsed[1]):
            return None
        return parsed[1]

    def _remote(self) -> RemoteUsers:
        if self.remote is None:
            raise Problem(403, "federation_refused", "federation is not enabled on this server")
        return self.remote

    def public_user(self, u: UserInfo) -> PublicUser:
        return PublicUser(u.user_id, u.uuid, u.display_name)

    def public_client(self, c: ClientInfo) -> PublicClient:
        assert self.ca is not None, "ensure_ca() runs at start-up"
        return PublicClient(
            c.client_id,
            c.uuid,
            c.cipher_suite,
            c.signature_key,
            (c.certificate, self.ca.certificate_der),
            c.created_at,
        )

    async def lookup_user(self, user_id: str) -> PublicUser:
        """A user of any domain (of another one: asked of its server)."""
        if self.remote_domain(user_id) is not None:
            return await self._remote().user(user_id)
        return self.public_user(await self._existing_user(user_id))

    async def lookup_clients(self, user_id: str) -> list[PublicClient]:
        """A user's clients and their credentials, of any domain."""
        if self.remote_domain(user_id) is not None:
            return await self._remote().clients(user_id)
        user = await self._existing_user(user_id)
        return [self.public_client(c) for c in await self.list_clients(user.uuid)]

    async def domain_as_certificate(self, domain: str) -> bytes:
        """The AS certificate (DER) of any domain: ours, or another's from its server."""
        if domain.strip().lower() == self.domain:
            assert self.ca is not None, "ensure_ca() runs at start-up"
            return self.ca.certificate_der
        return await self._remote().as_certificate(domain)

    async def _existing_user(self, user_id: str) -> UserInfo:
        user = await self.find_user(user_id)
        if user is None:
            raise Problem(404, "user_not_found", f"no user {user_id}")
        return user

    async def find_user_by_uuid(self, user_uuid: str, conn: AsyncConnection) -> UserInfo | None:
        row = (await conn.execute(sa.select(users).where(users.c.uuid == user_uuid))).first()
        return None if row is None else self._user(row)

    def _user(self, row: sa.Row) -> UserInfo:
        return UserInfo(
            row.uuid,
            row.name,
            ids.user_id(row.name, self.domain),
            row.display_name,
            row.discoverable,
        )

    async def client_uuids_of(self, user_uuid: str, conn: AsyncConnection) -> list[str]:
        rows = await conn.execute(
            sa.select(clients.c.uuid)
            .where(clients.c.user_uuid == user_uuid)
            .order_by(clients.c.uuid)
        )
        return [r.uuid for r in rows]

    async def get_client(
        self, client_uuid: str, conn: AsyncConnection | None = None
    ) -> ClientInfo | None:
        query = (
            sa.select(clients, users.c.name)
            .join(users, users.c.uuid == clients.c.user_uuid)
            .where(clients.c.uuid == client_uuid)
        )
        if conn is None:
            async with self.db.engine.connect() as c:
                row = (await c.execute(query)).first()
        else:
            row = (await conn.execute(query)).first()
        return None if row is None else self._client(row)

    def _client(self, row: sa.Row) -> ClientInfo:
        return ClientInfo(
            row.uuid,
            ids.client_id(row.name, self.domain, row.uuid),
            row.cipher_suite,
            row.signature_key,
            row.certificate,
            row.created_at,
        )

    async def list_clients(self, user_uuid: str) -> list[ClientInfo]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(clients, users.c.name)
                .join(users, users.c.uuid == clients.c.user_uuid)
                .where(clients.c.user_uuid == user_uuid)
                .order_by(clients.c.created_at, clients.c.uuid)
            )
            return [self._client(r) for r in rows]

    def is_remote_domain(self, domain: str) -> bool:
        """``domain`` names another domain than ours (whether valid or not)."""
        return domain.strip().lower() != self.domain

    async def search_directory_page(
        self, q: str, limit: int, cursor: str | None, domain: str | None = None
    ) -> tuple[list[PublicUser], str | None]:
        """One page of the opt-in directory search of any domain (of another one: asked of its
        server), at most ``limits.max_list_length`` users, and the cursor of the next page."""
        limit = min(limit, self.config.limits.max_list_length)
        if domain is not None and self.is_remote_domain(domain):
            domain = domain.strip().lower()
            if not is_valid_domain(domain):
                raise Problem(400, "invalid_request", "not a valid domain name")
            return await self._remote().search(domain, q, limit, cursor)
        found = await self.search_directory(q, limit + 1, cursor)
        more = len(found) > limit
        found = found[:limit]
        next_cursor = found[-1].name if more and found else None
        return [self.public_user(u) for u in found], next_cursor

    async def search_directory(self, q: str, limit: int, after: str | None) -> list[UserInfo]:
        q = q.strip().lower()
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        prefix = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = sa.select(users).where(
            users.c.discoverable.is_(True),
            sa.or_(
                users.c.name.like(prefix, escape="\\"),
                sa.func.lower(users.c.display_name).like(pattern, escape="\\"),
            ),
        )
        if after:
            query = query.where(users.c.name > after)
        query = query.order_by(users.c.name).limit(limit)
        async with self.db.engine.connect() as conn:
            return [self._user(r) for r in await conn.execute(query)]

    async def update_profile(self, principal: Principal, changes: dict[str, object]) -> UserInfo:
        values = {k: v for k, v in changes.items() if k in ("display_name", "discoverable")}
        async with self.db.transaction() as conn:
            if values:
                await conn.execute(
                    sa.update(users).where(users.c.uuid == principal.user_uuid).values(**values)
                )
            if "display_name" in values:
                await self._record_event(
                    conn,
                    "display_name_changed",
                    principal.user_id,
                    {"user_id": principal.user_id, "display_name": values["display_name"]},
                )
            user = await self.find_user_by_uuid(principal.user_uuid, conn)
        assert user is not None
        return user


@functools.cache
def _dummy_hash() -> str:
    # Made on first use, not at import: an argon2 hash takes a noticeable share of start-up.
    return PasswordHasher().hash("roost-dummy-password")


async def insert_user(
    conn: AsyncConnection,
    user_uuid: str,
    name: str,
    display_name: str | None,
    discoverable: bool,
    password_hash: str | None,
    now: int,
) -> bool:
    """Add a user row unless the name is in use or retired; False if it is. A concurrent insert
    of the same name still fails on the unique index (``IntegrityError``) for the caller."""
    taken = await conn.execute(
        sa.select(users.c.uuid)
        .where(users.c.name == name)
        .union_all(sa.select(retired_names.c.name).where(retired_names.c.name == name))
    )
    if taken.first() is not None:
        return False
    await conn.execute(
        sa.insert(users).values(
            uuid=user_uuid,
            name=name,
            display_name=display_name,
            discoverable=discoverable,
            password_hash=password_hash,
            created_at=now,
        )
    )
    return True
