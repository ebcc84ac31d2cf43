"""Federation fixtures: several homeserver processes of different domains (tests/federation/
harness.py) and per-domain user factories.

``federation``: a.test, b.test and c.test in open mode, module-scoped (starting three servers
costs seconds; tests make their own users, so they never depend on each other's data). Tests
that change a policy or stop a server put it back before they end. ``make_federation`` starts
other line-ups (two domains, other policies, other settings) that live until the module ends.

``pair`` / ``fed``: a.test and b.test on each engine, module-scoped.

``FEDERATION_ENGINES`` is SQLite, plus PostgreSQL (a fresh database per server) when
``ROOST_TEST_POSTGRES_URL`` is set (CI sets it); use it to parametrise an engine variant.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from .harness import DOMAINS, Federation
from .harness import make_federation as _make_federation

FEDERATION_ENGINES = ["sqlite"] + (
    ["postgresql"] if os.environ.get("ROOST_TEST_POSTGRES_URL") else []
)


@pytest.fixture(scope="module")
def make_federation(request, tmp_path_factory) -> Iterator[Callable[..., Federation]]:
    """Factory: ``make_federation(domains=..., engine=..., policy=..., extra_env=...)`` starts
    a federation that is stopped when the module ends."""
    started: list[Federation] = []

    def make(domains=DOMAINS, *, engine: str = "sqlite", **kwargs: Any) -> Federation:
        base = tmp_path_factory.mktemp(f"fed-{engine}")
        database_url = None
        if engine == "postgresql":
            database_url = request.getfixturevalue("postgres_database")
        fed = _make_federation(base, domains, engine=engine, database_url=database_url, **kwargs)
        started.append(fed)
        return fed

    yield make
    for fed in started:
        fed.stop()


@pytest.fixture(scope="module")
def federation(make_federation) -> Federation:
    """a.test, b.test, c.test (SQLite), open mode, for the whole module."""
    return make_federation()


@pytest.fixture
async def fed_users(federation) -> AsyncIterator[Federation]:
    """The module's federation; ``fed_users.users("b.test").new(...)`` registers a user there,
    and every client made so is closed after the test."""
    yield federation
    await federation.aclose_users()


@pytest.fixture(scope="module", params=FEDERATION_ENGINES)
def pair(request, make_federation) -> Federation:
    """a.test and b.test, open to each other (SQLite; also PostgreSQL when configured), for
    the whole module."""
    return make_federation(domains=("a.test", "b.test"), engine=request.param)


@pytest.fixture
async def fed(pair: Federation) -> AsyncIterator[Federation]:
    """The module's pair; clients made through it are closed after the test."""
    yield pair
    await pair.aclose_users()
