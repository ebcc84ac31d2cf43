"""What the push sender did, counted per provider (exposed on /metrics by observability/)."""

from __future__ import annotations

from collections import Counter

PROVIDERS = ("webpush", "apns", "fcm")

# event -> help text; each becomes the counter ``roost_push_<event>_total{provider}``
EVENTS = {
    "attempts": "Pushes handed to a push service",
    "sent": "Pushes the push service accepted",
    "failed": "Pushes that failed (refused, timed out, unreachable, provider not configured)",
    "unregistered": "Registrations dropped because the service answered gone (404/410)",
    "coalesced": "Wake-ups folded into a pending push (coalescing window)",
    "suppressed_online": "Pushes not sent because the client was connected over realtime",
}


class PushStats:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self.dropped = 0  # wake-ups dropped because the push queue was full

    def count(self, event: str, provider: str) -> None:
        assert event in EVENTS, event
        self._counts[event, provider] += 1

    def get(self, event: str, provider: str) -> int:
        return self._counts[event, provider]
