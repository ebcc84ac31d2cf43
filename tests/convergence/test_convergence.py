"""Groups converge under injected faults: three real homeservers (a.test SQLite, b.test
PostgreSQL when ``ROOST_TEST_POSTGRES_URL`` is set — else SQLite too, and the run says so —
c.test SQLite), users on all of them (some with two clients, two listening over realtime),
and a seeded sequence of operations and faults (tests/convergence/operations.py). At the end
every group is in one state at every live member, every acknowledged message was delivered
exactly once in order, and no group is without an admin (the precise rules:
tests/convergence/checks.py).

Operations whose fix is on another branch, or that trigger a problem this test found, are
listed in ``PENDING_FAULTS`` (tests/convergence/operations.py) and not chosen; problems found
that no switch avoids are in ``OPEN_FINDINGS`` below (a failing seed is then xfail).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest

from ..federation.harness import Federation
from .play import play
from .world import start_federation

SEEDS = [1, 2, 3]
OPS = 300

# Failures this test finds that no merged fix covers yet and that no operation switch in
# PENDING_FAULTS avoids (each seen in runs of the seeds below). While any is listed, a
# failing seed is reported as xfail with its full verdict; remove an entry once fixed, and
# the mark once the list is empty.
OPEN_FINDINGS = [
    # Seen once after the fixes for the earlier findings (seed 7, eight seeds run): the creator
    # of a group on c.test, a member from a.test, rejected a commit with a corrupted membership
    # tag and then missed three later messages of that group; not explained yet.
    "member misses messages after a corrupted commit",
    # Seen once before those fixes (seed 2): a member of another server, after a corrupted
    # membership tag, was refused its resync with "403 not_member" although the DS still
    # counted its leaf. The likeliest cause, a stale state reading items of a newer membership
    # before its Welcome, is fixed (tests/federation/test_remote_join_interrupted.py); not seen
    # again in eight seeds since. Kept until a soak confirms.
    "remote member's resync refused as not_member",
]


@pytest.fixture(scope="module")
def convergence_federation(request, tmp_path_factory) -> Iterator[Federation]:
    """One federation for every seed (each seed makes its own users and groups)."""
    database_url = None
    if os.environ.get("ROOST_TEST_POSTGRES_URL"):
        database_url = request.getfixturevalue("postgres_database")
    else:
        warnings.warn("ROOST_TEST_POSTGRES_URL is not set: b.test runs on SQLite too", stacklevel=1)
    fed = start_federation(tmp_path_factory.mktemp("convergence"), database_url)
    yield fed
    fed.stop()


@pytest.mark.timeout(900)
@pytest.mark.xfail(bool(OPEN_FINDINGS), reason="; ".join(OPEN_FINDINGS), strict=False)
@pytest.mark.parametrize("seed", SEEDS)
async def test_groups_converge_under_faults(convergence_federation: Federation, seed: int) -> None:
    outcome = await play(convergence_federation, seed, OPS)
    print(f"\nseed {seed}\n{outcome.table}")
    for line in outcome.verdict.failures:
        print("FAIL", line)  # shown with -s also when the seed is xfail
    failures = outcome.verdict.failures
    assert not failures, f"seed {seed}:\n{outcome.table}\n" + "\n".join(failures[:40])
