"""Smoke test of ``benchmarks/ds_bench.py``: a few messages to groups of 3 and of 50 on a real
``roost serve`` on SQLite, so the script keeps working when the protocol changes. No timing is
checked: a benchmark is not a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ds_bench_prints_a_row_per_group_size() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/ds_bench.py", "--engines", "sqlite", "--groups3", "2"]
        + ["--messages3", "20", "--messages50", "4", "--concurrency", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("sqlite ")]
    assert [r[1].strip() for r in rows] == ["3", "50"], out.stdout
    for r in rows:
        assert int(r[2]) > 0 and float(r[3]) > 0, r  # messages sent, and a rate measured
