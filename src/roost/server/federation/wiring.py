"""Assemble the federation services of one process (docs/federation.md)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config import Config
from ..outbound_client import OutboundClient
from ..store import Database
from . import FederationServices
from .directory import RemoteDirectory
from .identity import ServerIdentity
from .inbound import InboundVerifier
from .outbox import InboxDispatcher, Outbox
from .policy import FederationPolicyStore
from .resolver import Resolver
from .transport import FederationClient


def build_federation(
    db: Database, config: Config, clock: Callable[[], float] = time.time
) -> FederationServices:
    """Build (not start) the federation services; ``await services.start()`` in the lifespan."""
    policy = FederationPolicyStore(db, clock)
    identity = ServerIdentity(db, clock)
    resolver = Resolver(config)
    # One pooled client per process: keep-alive connections to each remote domain; made at
    # the first federation request. Connects only to addresses the outbound policy admits.
    http = OutboundClient(
        resolver.outbound_policy(config.outbound_allow_private),
        limits={"max_connections": 100, "max_keepalive_connections": 20},
        timeout=config.federation_timeout_seconds,
        follow_redirects=False,
        trust_env=False,  # no HTTP(S)_PROXY / netrc from the environment for server traffic
    )
    directory = RemoteDirectory(http, resolver, policy, clock)
    client = FederationClient(
        http,
        identity,
        policy,
        resolver,
        config.home_domain,
        clock,
        window_seconds=config.federation_signature_window_seconds,
    )
    outbox = Outbox(db, client, policy, clock, config.home_domain)
    verifier = InboundVerifier(
        db,
        directory,
        policy,
        config.home_domain,
        clock,
        window_seconds=config.federation_signature_window_seconds,
        on_contact=outbox.peer_reachable,
    )
    inbox = InboxDispatcher(db, clock)
    return FederationServices(
        identity=identity,
        policy=policy,
        directory=directory,
        client=client,
        outbox=outbox,
        inbox=inbox,
        resolver=resolver,
        verifier=verifier,
    )
