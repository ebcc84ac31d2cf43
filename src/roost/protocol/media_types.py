"""The media types of the HTTP API (docs/api.md, introduction, "Errors" and "Queues")."""

from __future__ import annotations

MLS_MEDIA_TYPE = "message/mls"
MESSAGES_MEDIA_TYPE = "application/vnd.roost.messages"
PROBLEM_MEDIA_TYPE = "application/problem+json"
