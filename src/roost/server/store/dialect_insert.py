"""``INSERT … ON CONFLICT`` in the dialect of the connection at hand.

SQLite's and PostgreSQL's ``insert`` constructs share the ``on_conflict_*`` API. The PostgreSQL
dialect package is large (every PostgreSQL driver's dialect module comes with it), so it is
imported the first time a PostgreSQL statement is built: a server on SQLite never loads it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .async_engine import AsyncConnection


def dialect_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """``insert(table)`` of ``conn``'s dialect (``sqlite`` or ``postgresql``)."""
    if conn.dialect.name == "postgresql":
        return pg_insert()(table)
    return sqlite_insert(table)


@functools.cache
def pg_insert() -> Callable[[sa.Table], Any]:
    """PostgreSQL's ``insert`` construct (imports the dialect package on first use)."""
    from sqlalchemy.dialects.postgresql import insert

    return insert
