"""notify: realtime delivery of queue items over WebSocket (wake-ups in-process, after commit)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .hub import Hub

if TYPE_CHECKING:
    from ..deps import Services


def install_notify(services: Services) -> Hub:
    """Create the hub and connect it: every committed enqueue wakes it; removing a client or
    deleting an account closes its sockets once that transaction committed."""
    hub = Hub()
    logging.getLogger("uvicorn.error").addFilter(_denial_noise)
    services.queues.listeners.append(hub.queue_item)
    services.queues.ack_listeners.append(hub.acked)
    services.auth.on_client_removed.append(hub.on_client_removed)
    services.auth.on_user_deleted.append(hub.on_user_deleted)
    return hub


def _denial_noise(record: logging.LogRecord) -> bool:
    """uvicorn's sans-io WebSocket protocol logs this error even after a proper denial
    response (our 401 before the upgrade); the route always answers, so it is only noise."""
    return record.msg != "ASGI callable returned without completing handshake."


__all__ = ["Hub", "install_notify"]
