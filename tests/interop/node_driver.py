"""A peer driver in Node: one ``node driver.mjs`` subprocess talking JSON lines (bytes as
hex), shared by the ts-mls and core-crypto peers, each with its own pinned npm directory."""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, TypeVar

from .peer import PeerError, PeerUnavailable

MIN_NODE_MAJOR = 20  # the global WebCrypto object is there by default from Node 20 on


def hex_or_none(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


@functools.cache
def ensure_node_packages(name: str, driver_dir: Path, packages: tuple[str, ...]) -> None:
    """Fail with a clear message unless Node >= 20 is present and ``packages`` are installed
    in ``driver_dir``; runs ``npm ci`` (pinned lock file) there on first use, as ``./dev test``
    does."""
    if shutil.which("node") is None:
        raise PeerUnavailable(f"{name} interop needs Node.js >= 20 ('node' not found on PATH)")
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
    major = int(version.lstrip("v").split(".")[0] or 0) if version.startswith("v") else 0
    if major < MIN_NODE_MAJOR:
        raise PeerUnavailable(f"{name} interop needs Node.js >= 20, found {version.strip()!r}")
    if all((driver_dir / "node_modules" / p).is_dir() for p in packages):
        return
    if shutil.which("npm") is None:
        raise PeerUnavailable(
            f"{name} is not installed in {driver_dir}/node_modules and 'npm' is not on PATH; "
            f"install npm and run: npm ci --prefix {driver_dir}"
        )
    proc = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=driver_dir,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PeerUnavailable(f"npm ci failed in {driver_dir}:\n{proc.stderr[-2000:]}")


class NodeDriver:
    """One ``node driver.mjs`` subprocess of ``driver_dir``; requests are strictly
    sequential."""

    def __init__(self, name: str, driver_dir: Path) -> None:
        self.name = name
        self._ids = itertools.count()
        self._lock = threading.Lock()
        # stderr goes to a file, not a pipe: an unread pipe could fill up and block node.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        self._proc = subprocess.Popen(
            ["node", str(driver_dir / "driver.mjs")],
            cwd=driver_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        req_id = next(self._ids)
        line = json.dumps({"id": req_id, "op": op, **args})
        with self._lock:
            if self._proc.poll() is not None:
                raise PeerUnavailable(f"{self.name} driver exited: {self._stderr_tail()}")
            assert self._proc.stdin is not None and self._proc.stdout is not None
            try:
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()
            except BrokenPipeError as e:
                raise PeerUnavailable(f"{self.name} driver died: {self._stderr_tail()}") from e
            reply_line = self._proc.stdout.readline()
        if not reply_line:
            raise PeerUnavailable(f"{self.name} driver closed its output: {self._stderr_tail()}")
        reply = json.loads(reply_line)
        if reply.get("id") != req_id:
            raise PeerUnavailable(f"{self.name} driver out of sync: {reply!r}")
        if not reply["ok"]:
            raise PeerError(f"{self.name} {op}: {reply['kind']}: {reply['error']}")
        return reply["result"]

    def _stderr_tail(self) -> str:
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "(driver still running)"
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


DriverT = TypeVar("DriverT", bound=NodeDriver)
_shared: dict[type[NodeDriver], NodeDriver] = {}


def shared(kind: type[DriverT]) -> DriverT:
    """The one running driver of ``kind`` for every peer that names none (started on first
    use, again if it died; closed at exit)."""
    driver = _shared.get(kind)
    if driver is None or not driver.alive:
        driver = _shared[kind] = kind()
        atexit.register(driver.close)
    assert isinstance(driver, kind)
    return driver
