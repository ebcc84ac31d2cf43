"""The log-redaction layer: no bearer token, realtime ticket, password, password hash, queue id,
cursor or frame payload reaches a log line, at any level, in either format, and no request line
names the group, user, client or connection it was about (docs/operations.md, "Logs").

One ``logging.Filter`` is attached to every handler the process logs through (uvicorn's, the
JSON handler, Python's last-resort handler), so it sees records of every logger, including
third-party ones (uvicorn, websockets, SQLAlchemy) that log request lines, headers and frames
at debug. Records that carry SQL statements and their parameters are dropped outright, and the
loggers that emit them, and those of the outbound HTTP client, are kept at warning.
"""

from __future__ import annotations

import logging
import re

REDACTED = "…"

# The request target of a logged request line: ids in the path, and every query value (queue
# ids, cursors, tokens travel there) replaced; parameter names stay, they help debugging.
# The id after each of these path segments: secrets (queue, client-request ids) and the ids
# that tie a caller (its address is on the line) to groups, users, clients and connections.
# Asset routes end in ids (``{id}`` or ``{domain}/{id}``).
# An API path: at the start of a request target or after a URL's host (not a file's path).
_API_PATH = re.compile(r"((?:^|[\s\"'(=]|://[^/\s\"']+))(/(?:federation/)?v1/[^\s?\"'#]*)")
_SECRET_PATH_SEGMENT = re.compile(
    r"(/(?:queues|client-requests|groups|users|clients|connections|roles)/)(?!\{)[^/]+"
    r"|(^/(?:federation/)?v1/assets/)(?!\{).+"
)
_QUERY = re.compile(r"(?<=[?&])([^=&\s\"'#]+)=[^&\s\"'#]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+")
# A header line as websockets and h11 log it at debug ("< authorization: ...").
_SECRET_HEADER = re.compile(
    r"(?im)^([<>]?\s*(?:authorization|proxy-authorization|cookie|set-cookie|roost-capability"
    r"|roost-queue-key|roost-group-key(?:-wrap)?|x-roost-[a-z-]*token)\s*:\s*).*$"
)
# websockets logs every frame with (the start and end of) its payload: keep only its kind.
_FRAME = re.compile(r"^([<>] (?:TEXT|BINARY|CONT)) .*?( \[\d+ bytes\])?$", re.S)
# JSON fields that hold a secret, in a frame, a body or a debugging dump.
_SECRET_FIELD = re.compile(
    r"(?i)([\"']?(?:password|token|access_token|registration_token|queue_id|queue_ids|queues|queue_key|queue_keys|group_key|group_key_wrap"
    r"|ticket|cursor|capability|secret)[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|\{[^}]*\}?|\[[^\]]*\]?)"
)
_ARGON2 = re.compile(r"\$argon2[a-z]*\$[^\s\"']*")

# Loggers whose records carry SQL statements and bound parameters (or driver call arguments).
_SQL_LOGGERS = ("sqlalchemy", "aiosqlite", "asyncpg")
# The outbound HTTP client logs every request's URL at info: a push endpoint or device token
# (a capability to wake that device), a federation path with group and user ids. Roost logs
# the outcomes it needs (federation outbox, push failures) itself.
_HTTP_CLIENT_LOGGERS = ("httpx", "httpcore")


def redact_target(target: str) -> str:
    """A request path with query: ids in the path and every query value replaced."""
    target = _API_PATH.sub(_redact_path, target)
    return _QUERY.sub(rf"\1={REDACTED}", target)


def _redact_path(found: re.Match[str]) -> str:
    before, path = found.group(1), found.group(2)
    return before + _SECRET_PATH_SEGMENT.sub(
        lambda m: f"{m.group(1) or m.group(2)}{REDACTED}", path
    )


def redact(text: str) -> str:
    """``text`` with every secret this module knows the shape of replaced by ``…``."""
    text = _FRAME.sub(rf"\1 {REDACTED}\2", text)
    text = _SECRET_HEADER.sub(rf"\1{REDACTED}", text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _SECRET_FIELD.sub(rf"\1{REDACTED}", text)
    text = _ARGON2.sub(f"$argon2{REDACTED}", text)
    return redact_target(text)


def _is_sql_record(record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING and record.name.startswith(_SQL_LOGGERS)


class RedactionFilter(logging.Filter):
    """Attach to handlers (see ``install_redaction``): rewrites a record's message in place,
    drops SQL statement records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_sql_record(record):
            return False
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # uvicorn's access formatter unpacks the arguments: redact them one by one.
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: leave it to the formatter
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_text is None:
            # Tracebacks can quote values (exception messages): format once, redacted.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactionFilter()
_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "roost", "roost.access")


def install_redaction() -> None:
    """Attach the filter to every handler reachable from the process's loggers, and keep the
    SQL and outbound HTTP loggers at warning whatever the root level (no statement, parameter
    or outbound URL is logged)."""
    handlers: list[logging.Handler] = []
    names = set(_LOGGERS) | set(logging.root.manager.loggerDict)
    for name in names:
        logger = logging.getLogger(name) if name else logging.getLogger()
        handlers.extend(logger.handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    for name in _SQL_LOGGERS + _HTTP_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
