"""Periodic clean-up so the database does not grow with consumed or expired rows.

Runs in every server process on a timer (cheap indexed deletes, safe to run concurrently).
"""

from __future__ import annotations

import asyncio
import logging

from .deps import Services

log = logging.getLogger("roost.server.maintenance")
SWEEP_INTERVAL_SECONDS = 300.0


async def sweep(services: Services) -> dict[str, int]:
    return {
        "auth": await services.auth.sweep(),
        "keypackages": await services.keypackages.sweep(),
        "assets": await services.assets.sweep(),
        "federation_nonces": await services.federation.verifier.sweep(),
    }


async def run_periodically(services: Services, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await sweep(services)
            if any(removed.values()):
                log.info("maintenance removed expired rows: %s", removed)
        except Exception:  # keep the timer alive; the next round retries
            log.exception("maintenance sweep failed")
