"""benchmarks/web_bench.py runs end to end (one load and one message per row) and prints its
table. Only that it works and what it reports: no timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys

from .driver import REPO, require

ROWS = [
    "first load -> sign-in form usable, cold cache",
    "first load -> sign-in form usable, warm cache",
    "signed-in reload -> conversation list shown, cold cache",
    "signed-in reload -> realtime Online, cold cache",
    "signed-in reload -> conversation list shown, warm cache",
    "signed-in reload -> realtime Online, warm cache",
    "message page -> page: click -> text in the receiver's page",
    "the sender's page: click -> shown as sent",
    "message page -> roost.client: click -> decrypted",
    "message roost.client -> page: send -> text in the page",
]


def test_web_bench_prints_its_table():
    require(browser=True)
    out = subprocess.run(
        [sys.executable, "benchmarks/web_bench.py", "--loads", "1", "--messages", "1"]
        + ["--warmup", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()

    # The bundle: the page and the three files it names, each with a size and a gzip size.
    files = {line.split("|")[0].strip(): line for line in lines if line.startswith("/")}
    assert set(files) == {"/ (index.html)", "/app.js", "/app.css", "/favicon.svg"}
    assert all(re.search(r"\|\s+[\d,]+ \|\s+[\d,]+$", line) for line in files.values())
    assert any(re.match(r"total\s+\|\s+[\d,]+ \|\s+[\d,]+$", line) for line in lines)

    # Every timed row, with a median, a p95 and its count (1).
    for label in ROWS:
        [row] = [line for line in lines if line.strip().startswith(label)]
        assert re.search(r"\|\s+[\d.]+ \|\s+[\d.]+ \|\s+1$", row), row
