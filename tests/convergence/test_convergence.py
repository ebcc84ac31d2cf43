"""Groups converge under injected faults: three real homeservers (a.test SQLite, b.test
PostgreSQL when ``ROOST_TEST_POSTGRES_URL`` is set — else SQLite too, and the run says so —
c.test SQLite), users on all of them (some with two clients, two listening over realtime),
and a seeded sequence of operations and faults (tests/convergence/operations.py). At the end
every group is in one state at every live member, every acknowledged message was delivered
exactly once in order, and no group is without an admin (the precise rules:
tests/convergence/checks.py).

Operations whose fix is on another branch, or that trigger a problem this test found, are
listed in ``PENDING_FAULTS`` (tests/convergence/operations.py) and not chosen (none now);
problems found that no switch avoids are in ``OPEN_FINDINGS`` below (a failing seed is then
an expected failure). ``benchmarks/soak.py`` runs one seed longer and prints everything the run noted.
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

# Failures this test found that are not fixed yet. While any is listed, a failing seed is
# reported as an expected failure (xfail) whose reason carries its first failures; remove an
# entry once it is fixed. The first two need items of a group still on their way between servers
# (held by a block, a peer down or a delivery retry) when the member acts; seeds 27 and 30 show
# them (each in some runs, not all).
OPEN_FINDINGS = [
    # ``Groups.leave`` forgets the group at once: messages sent before the leave that have not
    # reached the leaving client yet arrive for a group it no longer holds ("message for a
    # group we are not in") and are lost to it.
    "a leaving client loses the messages still on their way to it",
    # ``Groups._commit`` on ``epoch_conflict``: when the queue has not brought the winning
    # commit yet, the client rejoins by external commit at once instead of waiting for the
    # items on their way; when they arrive they are of past epochs and unreadable.
    "a commit rejoins instead of waiting for the items on their way",
    # Seen in full CI runs only (seed 1 twice, seed 3 once before the two above were known):
    # one message missed with nothing rejected; whether it is one of the two above is not
    # known (those runs did not print the failures).
    "a client misses single messages with nothing rejected",
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
@pytest.mark.parametrize("seed", SEEDS)
async def test_groups_converge_under_faults(convergence_federation: Federation, seed: int) -> None:
    outcome = await play(convergence_federation, seed, OPS)
    print(f"\nseed {seed}\n{outcome.table}")
    failures = outcome.verdict.failures
    if failures and OPEN_FINDINGS:
        # An expected failure, with its first failures in the run's summary line (a seed that
        # fails only in a full CI run must say there what it broke).
        pytest.xfail(f"{'; '.join(OPEN_FINDINGS)} — seed {seed}: " + " | ".join(failures[:5]))
    assert not failures, f"seed {seed}:\n{outcome.table}\n" + "\n".join(failures[:40])
