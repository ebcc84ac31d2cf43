"""This server's own facts recorded in its database (``roost_settings``), checked at start.

The home domain is recorded when the data is created (a database from before the record
existed adopts the configured one on its first start). Every user id, client credential and
federation peer's record carries the domain, so data is never served under another one
(docs/operations.md, "Changing home_domain").
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .async_engine import AsyncConnection
from .engine import Database
from .metadata import metadata

HOME_DOMAIN = "home_domain"

roost_settings = sa.Table(
    "roost_settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(1000), nullable=False),
)


class HomeDomainMismatch(Exception):
    """The data was created for another home domain; the message tells the operator what to do."""


def mismatch_message(recorded: str, configured: str, database: str) -> str:
    return (
        f"the data in {database} was created for home_domain {recorded!r}, but the "
        f"configuration says {configured!r}. Every user id and client credential carries the "
        "domain: serving this data under another one would rename every user and lock every "
        f"client out. Set home_domain back to {recorded!r}, or, to start a server for "
        f"{configured!r}, use a new, empty database (another data_dir or database_url). "
        'See docs/operations.md, "Changing home_domain".'
    )


async def _read(conn: AsyncConnection) -> str | None:
    has_table = await conn.run_sync(lambda c: sa.inspect(c).has_table(roost_settings.name))
    if not has_table:
        return None  # a schema from before the record existed
    value = await conn.scalar(
        sa.select(roost_settings.c.value).where(roost_settings.c.name == HOME_DOMAIN)
    )
    return None if value is None else str(value)


async def recorded_home_domain(db: Database) -> str | None:
    """The home domain the data was created for, or None if none is recorded yet."""
    async with db.engine.connect() as conn:
        return await _read(conn)


async def check_home_domain(db: Database, configured: str, database: str) -> None:
    """Record ``configured`` if no domain is recorded yet; raise HomeDomainMismatch if another
    one is. Needs the current schema (call after the schema check or upgrade)."""
    recorded = await recorded_home_domain(db)
    if recorded is None:
        try:
            async with db.transaction() as conn:
                await conn.execute(
                    sa.insert(roost_settings).values(name=HOME_DOMAIN, value=configured)
                )
            return
        except IntegrityError:  # another process starting at the same time recorded it first
            recorded = await recorded_home_domain(db)
    if recorded != configured:
        raise HomeDomainMismatch(mismatch_message(str(recorded), configured, database))
