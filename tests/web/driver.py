"""The browser tests' tools: whether Chromium and the page's node packages are here, and a
handle on ``browser.mjs`` (headless Chromium through playwright-core, JSON lines)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
DRIVER = Path(__file__).resolve().parent / "browser.mjs"
CHROMIUM = os.environ.get("ROOST_TEST_CHROMIUM", "/usr/bin/chromium")


def unavailable(*, browser: bool) -> str | None:
    """Why the web tests cannot run here, or None. ``./dev test`` installs all of it."""
    if shutil.which("node") is None:
        return "node is not installed (./dev test installs it)"
    if not (WEB / "node_modules" / "ts-mls").is_dir():
        return "web/node_modules is missing: run `npm ci` in web/ (./dev test does)"
    if browser and not os.access(CHROMIUM, os.X_OK):
        return (
            f"no Chromium at {CHROMIUM}: install it (`apt-get install chromium`, which ./dev "
            "test does when it can) or point ROOST_TEST_CHROMIUM at one"
        )
    return None


def require(*, browser: bool) -> None:
    """Skip when the tools are missing, except under CI=true, where that is a failure."""
    reason = unavailable(browser=browser)
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"web tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


class BrowserError(AssertionError):
    pass


class Browser:
    """One Chromium with named pages (one browser context each: separate users)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self._next = 0
        self.version: str = self.call("launch", executable=CHROMIUM)["version"]

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._next += 1
        self.proc.stdin.write(json.dumps({"id": self._next, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BrowserError(f"the browser driver exited ({self.proc.wait()})")
        reply = json.loads(line)
        if not reply["ok"]:
            raise BrowserError(f"{op}: {reply['error']}")
        return reply["result"]

    def open(self, name: str, url: str, **viewport: int) -> dict[str, Any]:
        return self.call("open", name=name, url=url + "/", **viewport)

    def sign_in(self, name: str, user: str, password: str, **kw: Any) -> dict[str, Any]:
        return self.call("sign_in", name=name, user=user, password=password, **kw)

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError, ValueError):
            self.call("quit")
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
