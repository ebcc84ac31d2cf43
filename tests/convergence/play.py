"""One convergence run from start to verdict: populate the world, seed groups, run the seeded
operations, lift the faults, settle, check. Shared by the test and benchmarks/soak.py."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..federation.harness import Federation
from .checks import Verdict, check, settle, table
from .operations import PENDING_FAULTS, Run
from .world import World, listening_devices, populate

# Pending operations to switch on for a run (comma-separated names of PENDING_FAULTS), e.g.
# to try another lane's fix before its entry is removed.
ENABLE_ENV = "ROOST_CONVERGENCE_ENABLE"


@dataclass
class Outcome:
    world: World
    verdict: Verdict
    wall: float
    table: str


def enabled_from_env() -> set[str]:
    names = {n.strip() for n in os.environ.get(ENABLE_ENV, "").split(",") if n.strip()}
    unknown = names - set(PENDING_FAULTS)
    if unknown:
        raise ValueError(f"{ENABLE_ENV}: not pending operations: {sorted(unknown)}")
    return names


async def play(fed: Federation, seed: int, ops: int, enabled: set[str] | None = None) -> Outcome:
    start = time.monotonic()
    world = await populate(fed, seed)
    try:
        run = Run(world, ops, enabled=enabled_from_env() if enabled is None else enabled)
        for d in listening_devices(world):  # they join the seed groups while listening
            world.start_listening(d)
        await run.seed_groups()
        await run.run()
        await run.undo_all()
        converge = await settle(world)
        verdict = await check(world)
        verdict.converge_seconds = converge
    finally:
        await world.aclose()
    wall = time.monotonic() - start
    return Outcome(world, verdict, wall, table(world, verdict, run.done, wall))
