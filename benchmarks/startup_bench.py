"""Start-up benchmark: time from process start to ready, and idle memory, of ``roost serve``.

For each run, on the default configuration (SQLite under a fresh data directory, exactly what
``./dev serve`` runs, with only the listen address and the data directory set):

- first start: ``roost serve`` on an empty data directory (it creates and migrates the database)
  until ``GET /ready`` answers 200, and the CPU time (user + system) the server had used by then
  (other load on the machine changes it far less than the wall-clock time; a child process
  counts once the server has waited for it); then idle for ``--idle`` seconds and read the
  resident memory (``VmRSS`` in /proc/<pid>/status, summed over the server process and its
  children);
- restart: SIGTERM, then ``roost serve`` again on the same data, timed and measured the same way.

With ``--postgres URL`` (or ``$ROOST_TEST_POSTGRES_URL``) a PostgreSQL column is added: a fresh
database per run, upgraded with ``roost db upgrade`` (untimed: on PostgreSQL ``serve`` never
migrates by itself), then the restart is timed.

``--variant NAME=SRC_DIR`` (repeatable) compares code trees with one interpreter: each variant
runs with ``PYTHONPATH=SRC_DIR`` (e.g. a ``git archive`` of an older commit's ``src``); runs
alternate between variants so that machine load affects them alike. Without it the installed
``roost`` is measured. Every variant's modules are compiled to bytecode before the first run and
the servers run with Python's default of reading it (``PYTHONDONTWRITEBYTECODE`` is dropped), as
an operator's server does from its second start on. Medians of ``--runs`` runs are printed; nothing is written to disk beyond
temporary data directories (removed at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

READY_TIMEOUT = 120.0
POLL_SECONDS = 0.01
SERVE = "import sys; from roost.cli.main import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Variant:
    name: str
    src: str | None  # PYTHONPATH for this variant; None: the installed roost

    def env(self, port: int, data_dir: Path, database_url: str = "") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.pop("PYTHONPATH", None)
        # Python's default: modules load from cached bytecode (warm_bytecode), as they do for
        # an operator from the second start on; compiling src/roost's ~200 modules from
        # source at every start costs ~0.15 s of CPU that no real restart pays.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if self.src:
            env["PYTHONPATH"] = self.src
        env["ROOST_LISTEN"] = f"127.0.0.1:{port}"
        env["ROOST_DATA_DIR"] = str(data_dir)
        if database_url:
            env["ROOST_DATABASE_URL"] = database_url
        return env


@dataclass
class Samples:
    ready_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss_kib(p)
        todo += _children(p)
    return total / 1024


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class Server:
    def __init__(self, variant: Variant, data_dir: Path, database_url: str = "") -> None:
        self.variant = variant
        self.data_dir = data_dir
        self.database_url = database_url
        self.proc: subprocess.Popen[bytes] | None = None

    def run_cli(self, *args: str) -> None:
        env = self.variant.env(free_port(), self.data_dir, self.database_url)
        subprocess.run(
            [sys.executable, "-c", SERVE, *args],
            env=env,
            cwd=self.data_dir,
            check=True,
            capture_output=True,
            timeout=300,
        )

    def start(self) -> tuple[float, float]:
        """Start ``roost serve``; returns the milliseconds until ``/ready`` answered 200, and
        the CPU time the server had used by then."""
        port = free_port()
        env = self.variant.env(port, self.data_dir, self.database_url)
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve"],
            env=env,
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while not _ready(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"roost serve ({self.variant.name}) did not get ready:\n{tail}")
            time.sleep(POLL_SECONDS)
        return (time.perf_counter() - t0) * 1000, cpu_ms(self.proc.pid)

    def rss_mib(self) -> float:
        assert self.proc is not None
        return tree_rss_mib(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def measure(server: Server, idle: float, into: Samples) -> None:
    try:
        ready_ms, used_ms = server.start()
        into.ready_ms.append(ready_ms)
        into.cpu_ms.append(used_ms)
        time.sleep(idle)
        into.rss_mib.append(server.rss_mib())
    finally:
        server.stop()


def _admin_url(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def _pg(url: str, sql: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE), via asyncpg."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg:", "postgresql:"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def warm_bytecode(variant: Variant) -> None:
    """Compile the variant's modules to bytecode once, before any timed start."""
    code = "import importlib.util as u; print(u.find_spec('roost').submodule_search_locations[0])"
    env = variant.env(0, Path(tempfile.gettempdir()))
    where = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], env=env, check=True)


Results = dict[tuple[str, str, str], Samples]  # (variant, engine, phase)


def bench(variants: list[Variant], runs: int, idle: float, pg_url: str | None) -> Results:
    results: Results = {}

    def samples(variant: Variant, engine: str, phase: str) -> Samples:
        return results.setdefault((variant.name, engine, phase), Samples())

    for variant in variants:
        warm_bytecode(variant)
    with tempfile.TemporaryDirectory(prefix="roost-startup-") as tmp:
        for run in range(runs):
            # Alternate the order too, so neither variant always runs right after the other.
            order = variants if run % 2 == 0 else list(reversed(variants))
            for variant in order:
                data = Path(tmp) / f"{variant.name}-{run}"
                data.mkdir()
                server = Server(variant, data)
                measure(server, idle, samples(variant, "sqlite", "first start"))
                measure(server, idle, samples(variant, "sqlite", "restart"))
                if pg_url:
                    name = f"roost_startup_{uuid.uuid4().hex[:12]}"
                    admin = _admin_url(pg_url, "postgres")
                    _pg(admin, f'CREATE DATABASE "{name}"')
                    try:
                        pg = Server(variant, data / "pg", _admin_url(pg_url, name))
                        pg.data_dir.mkdir()
                        pg.run_cli("db", "upgrade")
                        measure(pg, idle, samples(variant, "postgresql", "restart"))
                    finally:
                        _pg(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"run {run + 1}/{runs} done", file=sys.stderr, flush=True)
    return results


def _median(values: list[float]) -> str:
    """The median, and the range of the runs."""
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})"


def print_table(results: Results, variants: list[Variant], runs: int, idle: float) -> None:
    rows: list[tuple[str, str, str]] = []
    for engine, phase in (
        ("sqlite", "first start"),
        ("sqlite", "restart"),
        ("postgresql", "restart"),
    ):
        if any((v.name, engine, phase) in results for v in variants):
            rows.append((engine, phase, "time to ready (ms)"))
            rows.append((engine, phase, "CPU time to ready (ms)"))
            rows.append((engine, phase, f"idle RSS after {idle:g} s (MiB)"))
    head = ["configuration", *[v.name for v in variants]]
    table = []
    for engine, phase, metric in rows:
        cells = [f"{engine}, {phase}: {metric}"]
        for v in variants:
            s = results.get((v.name, engine, phase), Samples())
            by_metric = {"time": s.ready_ms, "CPU ": s.cpu_ms, "idle": s.rss_mib}
            cells.append(_median(by_metric[metric[:4]]))
        table.append(cells)
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(len(head))]
    print(f"medians of {runs} runs (min–max)")
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in table:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--idle", type=float, default=3.0, help="seconds idle before reading RSS")
    p.add_argument(
        "--postgres",
        default=os.environ.get("ROOST_TEST_POSTGRES_URL"),
        help="PostgreSQL server URL (a database is created and dropped per run)",
    )
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=SRC_DIR",
        help="a code tree to measure (PYTHONPATH); repeat to compare, runs alternate",
    )
    args = p.parse_args()
    variants = [
        Variant(name, str(Path(src).resolve()))
        for name, _, src in (v.partition("=") for v in args.variant)
    ] or [Variant("roost", None)]
    pg_url = None if args.no_postgres else args.postgres
    results = bench(variants, args.runs, args.idle, pg_url)
    print_table(results, variants, args.runs, args.idle)


if __name__ == "__main__":
    main()
