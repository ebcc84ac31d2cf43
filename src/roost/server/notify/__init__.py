"""notify: realtime delivery of queue items over WebSocket (wake-ups in-process, after commit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hub import Hub

if TYPE_CHECKING:
    from ..deps import Services


def install_notify(services: Services) -> Hub:
    """Create the hub and connect it: every committed enqueue wakes it; removing a client or
    deleting an account closes its sockets once that transaction committed."""
    hub = Hub()
    services.queues.listeners.append(hub.queue_item)
    services.auth.on_client_removed.append(hub.on_client_removed)
    services.auth.on_user_deleted.append(hub.on_user_deleted)
    return hub


__all__ = ["Hub", "install_notify"]
