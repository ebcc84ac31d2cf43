"""User and client identifiers: ``name@domain`` and ``name@domain/client-uuid``."""

from __future__ import annotations

import re
import uuid

from roost.protocol.user_id import canonical_user_id

from ..errors import Problem

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def normalize_name(name: str) -> str:
    name = name.strip().lower()
    if not NAME_RE.match(name):
        raise Problem(
            422,
            "invalid_name",
            "a user name is 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def user_id(name: str, domain: str) -> str:
    return f"{name}@{domain}"


def client_id(name: str, domain: str, client_uuid: str) -> str:
    return f"{name}@{domain}/{client_uuid}"


def parse_user_id(text: str) -> tuple[str, str] | None:
    """(name, domain) of a syntactically valid user id, else None."""
    name, sep, domain = canonical_user_id(text).rpartition("@")
    if not sep or not NAME_RE.match(name) or not domain:
        return None
    return name, domain


def parse_client_id(text: str) -> tuple[str, str, str] | None:
    """(name, domain, client uuid) of a syntactically valid client id, else None."""
    user, sep, cuuid = text.rpartition("/")
    parsed = parse_user_id(user) if sep else None
    if parsed is None or not is_uuid(cuuid):
        return None
    return parsed[0], parsed[1], cuuid.lower()


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False
