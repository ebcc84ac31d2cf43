"""Errors raised by the client library.

Every failed request surfaces as a ``RoostError``: the server's problem+json answer
(RFC 9457) mapped to ``status`` and the stable machine-readable ``code``.
"""

from __future__ import annotations

from typing import Any

from roost.mls.errors import ValidationError


class RoostError(Exception):
    """A request the homeserver refused (or a transport failure, with status 0)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str = "",
        *,
        title: str = "",
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.problem = problem or {}
        self.retry_after = retry_after  # seconds, from Retry-After (429 rate_limited)
        super().__init__(f"{status} {code}: {detail or title}".rstrip(": "))


def transport_error(method: str, path: str, e: BaseException) -> RoostError:
    """A request that got no answer (connection refused or lost, timeout): status 0."""
    return RoostError(0, "transport_error", f"{method} {path}: {e!r}")


class CredentialError(RoostError):
    """Another client's credential did not verify against its domain's AS certificate."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, "credential_invalid", detail)


class StateError(RoostError):
    """The local client state directory is missing, incomplete or unreadable."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, "local_state", detail)


class MissingAsCertificate(CredentialError, ValidationError):
    """A group member's credential names a domain whose AS certificate this client has not
    fetched yet: fetch it (``ensure_as_certificates``) and try again.

    Also a ``ValidationError``, so the MLS layer lets it through from a credential policy
    unchanged (it wraps any other exception of the policy in a ValidationError of its own)."""

    def __init__(self, domain: str) -> None:
        super().__init__(f"the AS certificate of {domain} has not been fetched")
        self.domain = domain
