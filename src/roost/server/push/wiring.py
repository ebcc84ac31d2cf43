"""Wiring: connect the push service to the queues, the realtime hub and the AS hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .service import PushService

if TYPE_CHECKING:
    from ..deps import Services
    from ..notify.hub import Hub


def install_push(services: Services, hub: Hub, clock: Callable[[], float]) -> PushService:
    """Create the push service and connect it: every committed enqueue may become a push;
    a removed client or deleted account takes its registration along."""
    push = PushService(
        services.auth.db,
        services.config,
        clock,
        # The hub's own map: a client with a live socket to this process needs no push.
        is_connected=lambda client_uuid: client_uuid in hub._by_client,
    )
    services.queues.listeners.append(push.on_wake)
    services.auth.on_client_removed.append(push.on_client_removed)
    services.auth.on_user_deleted.append(push.on_user_deleted)
    return push
