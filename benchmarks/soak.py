"""Soak: the convergence test's harness (tests/convergence/) run longer, with a table of what
happened.

Three real ``roost serve`` processes (a.test SQLite, b.test PostgreSQL when
``ROOST_TEST_POSTGRES_URL`` is set or ``--postgres URL`` is given, c.test SQLite), users on all
of them, and ``--ops`` seeded operations and faults; then every fault is lifted, the clients
sync until quiet and the convergence checks run. Prints: operations (by kind), faults injected
(by kind), messages sent/acknowledged/delivered, resyncs, time to converge, wall time, and the
failures if any (exit status 1 then).

    .venv/bin/python benchmarks/soak.py --ops 2000 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the convergence harness lives under tests/

from tests.conftest import _admin, _with_database  # noqa: E402
from tests.convergence.play import play  # noqa: E402
from tests.convergence.world import start_federation  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--postgres",
        default=os.environ.get("ROOST_TEST_POSTGRES_URL", ""),
        help="PostgreSQL server URL for b.test (a database is created and dropped); "
        "empty: b.test on SQLite",
    )
    args = ap.parse_args()
    made: list[str] = []

    def database() -> str:
        name = f"roost_soak_{uuid.uuid4().hex[:12]}"
        _admin(args.postgres, f'CREATE DATABASE "{name}"')
        made.append(name)
        return _with_database(args.postgres, name)

    with tempfile.TemporaryDirectory(prefix="roost-soak-") as tmp:
        fed = start_federation(Path(tmp), database if args.postgres else None)
        try:
            outcome = asyncio.run(play(fed, args.seed, args.ops))
        finally:
            fed.stop()
            for name in made:
                _admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine = "PostgreSQL" if args.postgres else "SQLite"
    print(f"seed {args.seed}; a.test SQLite, b.test {engine}, c.test SQLite")
    print(outcome.table)
    for line in outcome.verdict.failures:
        print("FAIL", line)
    for line in outcome.world.log:
        print("note", line)
    return 1 if outcome.verdict.failures else 0


if __name__ == "__main__":
    sys.exit(main())
