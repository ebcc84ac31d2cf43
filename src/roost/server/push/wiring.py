"""Wiring: connect the push service to the queues, the realtime hub and the AS hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..notify.presence import Presence
from .service import PushService

if TYPE_CHECKING:
    from ..deps import Services
    from ..notify.hub import Hub


def install_push(services: Services, hub: Hub, clock: Callable[[], float]) -> PushService:
    """Create the push service and connect it: every committed enqueue may become a push;
    a removed client or deleted account takes its registration along.

    On PostgreSQL, several processes may serve the same clients: the hub then publishes this
    process's connections (notify/presence.py), and the push decision consults them after the
    local hub. Presence lives as long as the push service (its only reader)."""
    db = services.auth.db
    presence = None
    if not db.is_sqlite:
        presence = Presence(db, services.config.push_presence_ttl_seconds)
        hub.presence = presence
    push = PushService(
        db,
        services.config,
        clock,
        is_connected=hub.is_connected,
        presence=presence,
        is_served=hub.is_served,
        client_of=services.queues.push_client_of,
    )
    services.queues.listeners.append(push.on_wake)
    services.auth.on_client_removed.append(push.on_client_removed)
    services.auth.on_user_deleted.append(push.on_user_deleted)
    return push
