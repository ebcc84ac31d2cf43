"""Typed results of the client library (thin views of the API's JSON answers)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from roost.protocol.base64url import unb64u


@dataclass(frozen=True, slots=True)
class ServerInfo:
    home_domain: str
    api: str
    cipher_suites: tuple[int, ...]
    registration: str
    as_certificate_pem: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ServerInfo:
        return cls(
            d["home_domain"],
            d.get("api", "/v1"),
            tuple(d.get("cipher_suites", (1,))),
            d.get("registration", "open"),
            d.get("as_certificate", ""),
        )


@dataclass(frozen=True, slots=True)
class ClientInfo:
    client_id: str
    client_uuid: str
    cipher_suite: int
    signature_key: bytes
    credential: tuple[bytes, ...]  # [leaf DER, AS DER]
    created_at: Any = None

    @property
    def user_id(self) -> str:
        return self.client_id.rsplit("/", 1)[0]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClientInfo:
        return cls(
            d["client_id"],
            d["client_uuid"],
            int(d["cipher_suite"]),
            unb64u(d["signature_key"]),
            tuple(unb64u(c) for c in d["credential"]),
            d.get("created_at"),
        )


@dataclass(frozen=True, slots=True)
class UserInfo:
    user_id: str
    user_uuid: str
    display_name: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UserInfo:
        return cls(d["user_id"], d["user_uuid"], d.get("display_name"))


@dataclass(frozen=True, slots=True)
class Me:
    user_id: str
    user_uuid: str
    display_name: str | None
    discoverable: bool
    client_id: str
    clients: tuple[ClientInfo, ...]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Me:
        return cls(
            d["user_id"],
            d["user_uuid"],
            d.get("display_name"),
            bool(d.get("discoverable", False)),
            d["client_id"],
            tuple(ClientInfo.from_json(c) for c in d.get("clients", ())),
        )


@dataclass(frozen=True, slots=True)
class Registration:
    user_id: str
    user_uuid: str
    client: ClientInfo


@dataclass(frozen=True, slots=True)
class DirectoryPage:
    users: tuple[UserInfo, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A pending request by a new device to join a user's clients."""

    request_id: str
    device_name: str | None
    cipher_suite: int
    signature_key: bytes
    created_at: Any = None
    expires_at: Any = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClientRequest:
        return cls(
            d["request_id"],
            d.get("device_name"),
            int(d.get("cipher_suite", 1)),
            unb64u(d["signature_key"]),
            d.get("created_at"),
            d.get("expires_at"),
        )


@dataclass(frozen=True, slots=True)
class Connection:
    connection_id: str
    requester: str
    responder: str
    state: str  # opening | pending | accepted | rejected
    created_at: Any = None
    updated_at: Any = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Connection:
        return cls(
            d["connection_id"],
            d["requester"],
            d["responder"],
            d["state"],
            d.get("created_at"),
            d.get("updated_at"),
        )


@dataclass(frozen=True, slots=True)
class KeyPackageCount:
    count: int
    last_resort: int
    by_cipher_suite: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KeyPackageCount:
        by = {int(k): int(v) for k, v in (d.get("by_cipher_suite") or {}).items()}
        return cls(int(d["count"]), int(d.get("last_resort", 0)), by)


@dataclass(frozen=True, slots=True)
class PublishResult:
    published: int
    last_resort: int
    refs: tuple[bytes, ...] = ()  # KeyPackageRefs of what was published (when generated here)


QUEUE_KEY_HEADER = "Roost-Queue-Key"


@dataclass(frozen=True, slots=True)
class GroupQueue:
    """A group-message queue this client owns: its id and the secret key that authorises
    fetching, acking and deleting it and registering it with a group (docs/api.md, "Queues").
    ``key`` is empty for a queue made before keys existed, until its key is claimed. The key
    stays out of ``repr`` (and so out of logs and exception messages)."""

    id: str
    key: str = field(default="", repr=False)

    @property
    def claimed(self) -> bool:
        return bool(self.key)

    @property
    def headers(self) -> dict[str, str]:
        """The header that proves ownership (none while the key is unclaimed)."""
        return {QUEUE_KEY_HEADER: self.key} if self.key else {}


@dataclass(frozen=True, slots=True)
class QueueMessage:
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class FetchResult:
    messages: tuple[QueueMessage, ...]
    last_seq: int
    has_more: bool


@dataclass(frozen=True, slots=True)
class DirectEvent:
    """One entry of the user's direct queue."""

    seq: int
    type: str  # connection_request | connection_accepted | connection_rejected | message | welcome
    sender: str | None
    connection_id: str | None
    payload: bytes | None
    sent_at: Any = None
    group_id: bytes | None = None  # welcome: the group the Welcome is for
    group_seq: int | None = None
    # welcome: the group's key wrapped for the joined epoch (``group_key``); None: legacy group.
    group_key_wrap: str | None = field(default=None, repr=False)

    @classmethod
    def from_message(cls, m: QueueMessage) -> DirectEvent:
        d = json.loads(m.payload)
        payload = d.get("payload")
        group_id = d.get("group_id")
        return cls(
            m.seq,
            d["type"],
            d.get("from"),
            d.get("connection_id"),
            unb64u(payload) if payload else None,
            d.get("sent_at"),
            unb64u(group_id) if group_id else None,
            d.get("group_seq"),
            d.get("group_key_wrap") or None,
        )


@dataclass(frozen=True, slots=True)
class DirectFetch:
    events: tuple[DirectEvent, ...]
    last_seq: int
    has_more: bool
