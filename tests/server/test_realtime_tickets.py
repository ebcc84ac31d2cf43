"""Realtime tickets on the app's clock (SQLite and PostgreSQL): a ticket expires after
``realtime_ticket_ttl_seconds``, the maintenance sweep removes expired ones, and deleting the
token it was issued with deletes its tickets too. The WebSocket side is in
tests/integration/test_realtime_tickets.py."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from roost.server.auth.tables import realtime_tickets
from roost.server.errors import Problem
from roost.server.maintenance import sweep

from .conftest import Server


async def issue(server: Server, headers: dict[str, str]) -> str:
    r = await server.http.post("/v1/realtime/tickets", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_at"] == int(server.clock.now) + 30
    return str(body["ticket"])


async def stored(server: Server) -> int:
    services = server.app.state.services  # type: ignore[attr-defined]
    async with services.auth.db.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(realtime_tickets)
        return int((await conn.execute(query)).scalar_one())


async def test_a_ticket_expires_and_is_swept(server: Server) -> None:
    alice = await server.user("alice")
    services = server.app.state.services  # type: ignore[attr-defined]
    fresh = await issue(server, alice.headers)
    principal, _ = await services.tickets.redeem(fresh)
    assert principal.user_id == alice.user_id

    late = await issue(server, alice.headers)
    server.clock.advance(31)
    with pytest.raises(Problem) as e:
        await services.tickets.redeem(late)
    assert (e.value.status, e.value.code) == (401, "invalid_ticket")

    await issue(server, alice.headers)
    await issue(server, alice.headers)
    assert await stored(server) == 2
    server.clock.advance(31)
    await sweep(services)
    assert await stored(server) == 0


async def test_tickets_go_with_their_token(server: Server) -> None:
    alice = await server.user("alice")
    bob = await server.user("bob")
    await issue(server, alice.headers)
    await issue(server, bob.headers)
    # Deleting the account deletes its tokens, and their unexpired tickets with them.
    assert (await server.http.delete("/v1/me", headers=alice.headers)).status_code == 204
    assert await stored(server) == 1
