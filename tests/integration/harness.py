"""Start and stop a real ``roost serve`` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

READY_TIMEOUT = 60.0

# Generous limits so the suite itself never trips a rate limit it is not testing.
TEST_ENV = {
    "ROOST_HOME_DOMAIN": "localhost",
    "ROOST_REGISTRATION_POLICY": "open",
    "ROOST_LOG_LEVEL": "warning",
    "ROOST_LIMITS_REGISTRATIONS_PER_MINUTE": "100000",
    "ROOST_LIMITS_CLAIMS_PER_MINUTE": "100000",
    "ROOST_LIMITS_CLAIMS_PER_TARGET_PER_MINUTE": "100000",
    "ROOST_LIMITS_AUTH_PER_MINUTE": "100000",
    "ROOST_LIMITS_MAX_BODY_BYTES": "262144",
    "ROOST_LIMITS_MAX_MESSAGE_BYTES": "65536",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """One homeserver process; ``url`` is its base URL, ``env`` its configuration."""

    engine: str
    data_dir: Path
    database_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.update(TEST_ENV)
        env.update(
            {
                "ROOST_LISTEN": f"127.0.0.1:{self.port}",
                "ROOST_DATA_DIR": str(self.data_dir),
                "ROOST_DATABASE_URL": self.database_url,
            }
        )
        env.update(self.extra_env)
        return env

    def _roost(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "roost.cli.main", *args]

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        upgrade = subprocess.run(
            self._roost("db", "upgrade"),
            env=self.env,
            cwd=self.data_dir,
            capture_output=True,
            timeout=120,
        )
        if upgrade.returncode != 0:
            raise RuntimeError(
                f"roost db upgrade failed ({self.engine}):\n"
                f"{upgrade.stdout.decode(errors='replace')}{upgrade.stderr.decode(errors='replace')}"
            )
        return self.spawn()

    def spawn(self) -> ServerProcess:
        """Start ``roost serve`` on the current port and data (schema already upgraded)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process keeps it open
        self.proc = subprocess.Popen(
            self._roost("serve"),
            env=self.env,
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"roost serve ({self.engine}) exited with {self.proc.returncode}:\n"
                    + self.log_tail()
                )
            try:
                r = httpx.get(self.url + "/.well-known/roost", timeout=2)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"roost serve ({self.engine}) not ready in time:\n" + self.log_tail())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
