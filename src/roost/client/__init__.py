"""roost.client: async client library for a Roost homeserver (HTTP API v1).

Typical use::

    client = await RoostClient.register("http://127.0.0.1:8448", "alice", password="...",
                                        home=Home("~/.roost"))
    await client.publish_key_packages(10)
    bob = await client.lookup_user("bob@localhost")
"""

from .client import PendingClient, RoostClient, key_fingerprint
from .credentials import VerifiedClient, verify_chain, verify_client_credential
from .errors import CredentialError, MissingAsCertificate, RoostError, StateError
from .groups import GroupEvent, Groups, GroupSummary, SentMessage
from .history import History, HistoryEntry
from .models import (
    ClientInfo,
    ClientRequest,
    Connection,
    DirectEvent,
    DirectFetch,
    DirectoryPage,
    FetchResult,
    GroupQueue,
    KeyPackageCount,
    Me,
    PublishResult,
    QueueMessage,
    ServerInfo,
    UserInfo,
)
from .realtime import Delivery, QueueRefused, Realtime, RealtimeClosed, listen
from .state import ClientState, Home, KeyPackageSecrets

__all__ = [
    "RoostClient",
    "Groups",
    "GroupEvent",
    "GroupSummary",
    "SentMessage",
    "History",
    "HistoryEntry",
    "Realtime",
    "RealtimeClosed",
    "QueueRefused",
    "Delivery",
    "listen",
    "PendingClient",
    "key_fingerprint",
    "VerifiedClient",
    "verify_chain",
    "verify_client_credential",
    "RoostError",
    "CredentialError",
    "MissingAsCertificate",
    "StateError",
    "ClientInfo",
    "ClientRequest",
    "Connection",
    "DirectEvent",
    "DirectFetch",
    "DirectoryPage",
    "FetchResult",
    "GroupQueue",
    "KeyPackageCount",
    "Me",
    "PublishResult",
    "QueueMessage",
    "ServerInfo",
    "UserInfo",
    "ClientState",
    "Home",
    "KeyPackageSecrets",
]
