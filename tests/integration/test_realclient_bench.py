"""Smoke test of ``benchmarks/realclient_bench.py``: one tiny cell per client path runs against a
real ``roost serve`` (SQLite, and PostgreSQL when ``ROOST_TEST_POSTGRES_URL`` is set) and the
table comes out with every message received. No timing is checked: a benchmark is not a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APIS = ("groups", "raw", "opaque")


def test_realclient_bench_prints_a_table_for_each_client_path() -> None:
    engines = ["sqlite"] + (["postgresql"] if os.environ.get("ROOST_TEST_POSTGRES_URL") else [])
    out = subprocess.run(
        [sys.executable, "benchmarks/realclient_bench.py", "--groups", "3", "--senders", "2"]
        + ["--seconds", "0.5", "--window", "2", "--api", ",".join(APIS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert any(line.startswith("engine     |   G | api") for line in lines), out.stdout
    rows = [line.split("|") for line in lines if line.split("|")[0].strip() in engines]
    assert {(r[0].strip(), r[2].strip()) for r in rows} == {(e, a) for e in engines for a in APIS}
    for r in rows:
        assert int(r[4]) > 0, r  # messages sent
        assert "decrypted" not in r[-1], r  # every receiver got every message
    pg_rows = [r for r in rows if r[0].strip() == "postgresql"]
    assert all(r[-2].strip().endswith("ms") for r in pg_rows)  # its backends' CPU was read
    assert "load average" in lines[-1]
