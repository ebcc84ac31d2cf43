"""Start a stand-in push service as a separate process and talk to its test endpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


class StandIn:
    def __init__(self, mode: str, key_file: Path | None = None) -> None:
        args = [sys.executable, "-m", "tests.push_services.standin", mode]
        if key_file is not None:
            args.append(str(key_file))
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.proc.kill()
            raise RuntimeError(f"the {mode} stand-in did not start")
        self.base_url = f"http://127.0.0.1:{int(line)}"

    def received(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base_url}/_received").json()

    def reset(self) -> None:
        httpx.post(f"{self.base_url}/_reset")

    def subscribe(self, sub_id: str) -> dict[str, Any]:
        return httpx.post(f"{self.base_url}/_subscribe", json={"id": sub_id}).json()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
