"""What a remote domain can make this server hold, through the remote directory and the
federation client.

- The remote directory keeps nothing for domains it could not read: in open mode any valid
  ``Roost-Origin`` makes the server look up that domain's keys, and a per-domain lock left
  behind for every unreadable domain would grow without bound (the cache is an LRU).
- A domain that could not be read is not asked again for a while (``failure_ttl_seconds``).
- A remote answer is read only up to a bound: a peer answering a huge body must not make this
  server buffer it all (the directory already caps the well-known document)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from roost.server.config import load_config
from roost.server.federation.directory import RemoteDirectory
from roost.server.federation.identity import ServerIdentity
from roost.server.federation.policy import FederationPolicyStore
from roost.server.federation.resolver import Resolver
from roost.server.federation.transport import (
    MAX_RESPONSE_BYTES,
    FederationClient,
    RemoteUnavailable,
)
from roost.server.store import Database
from roost.server.store.migrate import upgrade

from .harness import RecordingServer


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


async def test_unreadable_domains_leave_nothing_behind(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'roost.db'}")
    await upgrade(db)
    policy = FederationPolicyStore(db)
    await policy.set_mode("open")
    domains = [f"gone{i}.test" for i in range(20)]
    port = _closed_port()
    config = load_config(
        env={
            "ROOST_HOME_DOMAIN": "a.test",
            "ROOST_FEDERATION_RESOLVE": ",".join(f"{d}=127.0.0.1:{port}" for d in domains),
            "ROOST_FEDERATION_INSECURE_DOMAINS": ",".join(domains),
        }
    )
    async with httpx.AsyncClient(timeout=5) as http:
        directory = RemoteDirectory(http, Resolver(config), policy)
        for domain in domains:
            with pytest.raises(RemoteUnavailable):
                await directory.server_keys(domain)
        assert directory._locks == {} and len(directory._cache) == 0
    await db.dispose()


async def test_a_huge_remote_answer_is_refused_not_buffered(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'roost.db'}")
    await upgrade(db)
    policy = FederationPolicyStore(db)
    await policy.set_mode("open")
    with RecordingServer({"pad": "x" * (MAX_RESPONSE_BYTES + 1)}) as big:
        config = load_config(
            env={
                "ROOST_HOME_DOMAIN": "a.test",
                "ROOST_FEDERATION_RESOLVE": f"big.test=127.0.0.1:{big.port}",
                "ROOST_FEDERATION_INSECURE_DOMAINS": "big.test",
            }
        )
        async with httpx.AsyncClient(timeout=30) as http:
            client = FederationClient(http, ServerIdentity(db), policy, Resolver(config), "a.test")
            with pytest.raises(RemoteUnavailable, match="too large"):
                await client.send("big.test", "GET", "/federation/v1/whoami")
        assert len(big.requests) == 1  # it was asked, signed
    await db.dispose()


async def test_an_unreadable_domain_is_not_asked_again_for_a_while(tmp_path: Path) -> None:
    """Each request naming a domain whose server answers nonsense (or nothing) no longer makes
    its own outbound fetch: the failure is remembered for ``failure_ttl_seconds``."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'roost.db'}")
    await upgrade(db)
    policy = FederationPolicyStore(db)
    await policy.set_mode("open")
    with RecordingServer({"not": "a roost document"}) as odd:
        config = load_config(
            env={
                "ROOST_HOME_DOMAIN": "a.test",
                "ROOST_FEDERATION_RESOLVE": f"odd.test=127.0.0.1:{odd.port}",
                "ROOST_FEDERATION_INSECURE_DOMAINS": "odd.test",
            }
        )
        async with httpx.AsyncClient(timeout=5) as http:
            directory = RemoteDirectory(http, Resolver(config), policy, failure_ttl_seconds=0.5)
            with pytest.raises(RemoteUnavailable, match="invalid"):
                await directory.server_keys("odd.test")
            for _ in range(5):
                with pytest.raises(RemoteUnavailable, match="not asked again yet"):
                    await directory.as_certificate("odd.test")
            assert len(odd.requests) == 1
            await asyncio.sleep(0.6)  # the window is over: asked once more
            with pytest.raises(RemoteUnavailable, match="invalid"):
                await directory.server_keys("odd.test")
            assert len(odd.requests) == 2
            assert directory._locks == {} and len(directory._cache) == 0
    await db.dispose()
