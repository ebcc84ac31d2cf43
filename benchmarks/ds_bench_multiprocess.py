"""Delivery Service benchmark, two-process column: the ``ds_bench.py`` load (1 KiB messages to
groups of 3 and of 50, every other member on a realtime WebSocket) on PostgreSQL, with

- ``1 process``: senders and receivers on the same ``roost serve`` (B);
- ``2 processes``: two ``roost serve`` processes on one database; senders POST to B, every
  receiver's socket is on A, so each delivery crosses processes through LISTEN/NOTIFY.

Same columns as ``ds_bench.py``; RSS and CPU/msg count both processes in the two-process row.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ds_bench import HEADER, _pg_admin, cpu_seconds, make_group, print_row, rss_mib, run
from roost.cli.demo import embedded_server

LIMITS = {
    "ROOST_LIMITS_REGISTRATIONS_PER_MINUTE": "100000",
    "ROOST_LIMITS_CLAIMS_PER_MINUTE": "100000",
    "ROOST_LIMITS_CLAIMS_PER_TARGET_PER_MINUTE": "100000",
    "ROOST_LIMITS_AUTH_PER_MINUTE": "100000",
}


def _point_realtime_at(client, url: str) -> None:  # type: ignore[no-untyped-def]
    """The client's realtime socket goes to ``url`` (its HTTP stays on the registering one)."""
    try:
        client.state.server = url
    except dataclasses.FrozenInstanceError:
        client.state = dataclasses.replace(client.state, server=url)


async def bench(args: argparse.Namespace) -> list[tuple[str, int, dict]]:
    db_name = f"roost_bench_mp_{uuid.uuid4().hex[:10]}"
    await _pg_admin(args.postgres_url, f'CREATE DATABASE "{db_name}"')
    parts = urlsplit(args.postgres_url)
    env = {**LIMITS, "ROOST_DATABASE_URL": urlunsplit(parts._replace(path="/" + db_name))}
    rows = []
    try:
        with ExitStack() as stack:
            tmp_b = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="roost-mp-b-")))
            tmp_a = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="roost-mp-a-")))
            b = stack.enter_context(embedded_server(tmp_b, extra_env=env))
            a = stack.enter_context(embedded_server(tmp_a, extra_env=env))
            for label, cross in (("1 process", False), ("2 processes", True)):
                for size, n_groups, messages in (
                    (3, args.groups3, args.messages3),
                    (50, 1, args.messages50),
                ):
                    per_group = max(1, messages // n_groups)
                    groups = [await make_group(b.url, size, per_group) for _ in range(n_groups)]
                    if cross:
                        for g in groups:
                            for c, _ in g.receivers:
                                _point_realtime_at(c, a.url)
                    cpu_a0 = cpu_seconds(a.pid)
                    result = await run(groups, args.concurrency, b.pid)
                    if cross:  # the receiving process's share of the work
                        extra_cpu = cpu_seconds(a.pid) - cpu_a0
                        result["cpu_ms_per_msg"] += extra_cpu * 1000 / max(1, result["messages"])
                        result["rss_mib"] += rss_mib(a.pid)
                    rows.append((label, size, result))
                    print_row(label, size, result, file=sys.stderr)
                    for g in groups:
                        await g.sender.aclose()
                        for c, _ in g.receivers:
                            await c.aclose()
    finally:
        await _pg_admin(args.postgres_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages3", type=int, default=1500, help="messages to groups of 3 (total)")
    p.add_argument("--groups3", type=int, default=8, help="how many groups of 3 share the load")
    p.add_argument("--messages50", type=int, default=150, help="messages to the group of 50")
    p.add_argument("--concurrency", type=int, default=32, help="sends in flight")
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("ROOST_BENCH_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test",
    )
    args = p.parse_args()
    rows = asyncio.run(bench(args))
    print(HEADER.replace("engine     ", "postgresql "))
    for label, size, result in rows:
        print_row(label, size, result)


if __name__ == "__main__":
    main()
