"""Browser messenger benchmark: what the page weighs, how fast it loads, how fast it delivers.

Starts a real ``roost serve`` (SQLite in a temporary directory, ``--port`` or a free loopback
port) and drives Debian's headless Chromium through the browser tests' driver
(``tests/web/driver.py`` and ``browser.mjs``: playwright-core). Prints one table:

- bundle: each file ``/`` loads (the page and what it names: script, stylesheet, icon), as
  served (bytes) and compressed with gzip -9, and their total;
- first load, not signed in: from navigation start to the sign-in form usable (the page's
  deferred script has run: DOMContentLoaded). Cold: a new browser profile per load (empty
  cache); warm: a reload in the same profile;
- reload, signed in (a user with one conversation stored in IndexedDB): from navigation start
  to the conversation list showing it, and to the realtime status "Online". Cold: the HTTP
  cache bypassed (Chrome DevTools protocol), stored data kept; warm: a plain reload;
- messages in a 1:1 conversation: from the sender's click on "Send" (the click event in the
  page) to the text in the receiver's page (a MutationObserver on the message list: in the
  DOM, painted at the next frame); page to page (two browser profiles, turns alternating);
  page to a ``roost.client`` user in this process (until its realtime listener has
  decrypted it) and back (from just before ``Groups.send`` to the text in the page). Also the
  sender's own view: click to the message shown as sent (the POST accepted).

Times are milliseconds, median and p95 (inclusive quantiles) over ``--loads`` loads and
``--messages`` messages per row, after ``--warmup`` unmeasured ones. Page timestamps (Date.now()
and performance.now()) are taken inside the page, so the driver's own round trips are not
counted; this process's clock and the page's are the same machine's wall clock. Nothing is
written to disk outside a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the browser tests' driver lives in tests/web

from tests.web.driver import Browser, unavailable  # noqa: E402

from ds_bench import bench_server, pct  # noqa: E402
from roost.client import RoostClient  # noqa: E402
from roost.client.groups import GroupEvent, Groups  # noqa: E402

PASSWORD = "correct horse battery"
DOMAIN = "localhost"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# ---- bundle ----------------------------------------------------------------------------------
def bundle_sizes(url: str) -> tuple[list[tuple[str, int, int]], set[str]]:
    """(path, bytes, gzip -9 bytes) for ``/`` and each file its HTML names; and the
    Content-Encodings the server answered a browser's Accept-Encoding with."""
    encodings = set()
    accept = {"Accept-Encoding": "gzip, deflate, br, zstd"}  # what Chromium sends
    with httpx.Client(base_url=url, timeout=10, headers=accept) as http:
        page = http.get("/")
        page.raise_for_status()
        names = re.findall(r'(?:src|href)="(/[^"]*)"', page.text)
        answers = [("/ (index.html)", page)]
        for name in dict.fromkeys(names):  # in page order, once each
            r = http.get(name)
            r.raise_for_status()
            answers.append((name, r))
    rows = []
    for name, r in answers:
        encodings.add(r.headers.get("content-encoding", "none"))
        rows.append((name, len(r.content), gzip_size(r.content)))
    return rows, encodings


def gzip_size(body: bytes) -> int:
    """Bytes of ``gzip -9 -n`` (GNU gzip's deflate; Python's zlib where there is none)."""
    if shutil.which("gzip") is None:
        return len(gzip.compress(body, compresslevel=9, mtime=0))
    return len(subprocess.run(["gzip", "-9", "-n"], input=body, capture_output=True).stdout)


# ---- browser, from async code ------------------------------------------------------------------
class Pages:
    """The blocking driver, called from a worker thread so that this process's event loop (the
    roost.client user's realtime listener) keeps running while the browser works."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser, self.url = browser, url

    async def call(self, op: str, **args: Any) -> Any:
        return await asyncio.to_thread(self.browser.call, op, **args)

    async def open(self, name: str) -> None:
        await self.call("open", name=name, url=self.url + "/", timing=True)

    async def sign_up(self, name: str) -> str:
        """A new user signed up in page ``name``; its user id."""
        user = unique("web")
        await self.open(name)
        r = await self.call("sign_in", name=name, user=user, password=PASSWORD, register=True)
        if r["error"] is not None:
            raise RuntimeError(f"sign-up failed: {r['error']}")
        await self.call("text", name=name, selector="#status", wait_for="Online")
        return f"{user}@{DOMAIN}"


# ---- loads ---------------------------------------------------------------------------------------
async def first_loads(pages: Pages, n: int, warmup: int) -> dict[str, list[float]]:
    """Navigation start to sign-in form usable, in fresh profiles and on reloads of one."""
    cold = []
    for i in range(warmup + n):
        await pages.open("visitor")
        r = await pages.call("timed_load", name="visitor", until=["form"])
        await pages.call("close_page", name="visitor")
        if i >= warmup:
            cold.append(r["marks"]["form"])
    warm = []
    await pages.open("visitor")
    for i in range(warmup + n):
        r = await pages.call("timed_load", name="visitor", reload=True, until=["form"])
        if i >= warmup:
            warm.append(r["marks"]["form"])
    await pages.call("close_page", name="visitor")
    return {"cold": cold, "warm": warm}


async def signed_in_reloads(
    pages: Pages, name: str, n: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """Reload to the conversation list shown and to "Online", cache bypassed and not."""
    out: dict[str, dict[str, list[float]]] = {
        cache: {"list": [], "online": [], "transferred": []} for cache in ("cold", "warm")
    }
    for i in range(warmup + n):
        for cache in ("cold", "warm"):  # alternating: a change in machine load hits both
            r = await pages.call(
                "timed_load",
                name=name,
                reload=True,
                no_cache=cache == "cold",
                until=["list", "online"],
            )
            if i >= warmup:
                out[cache]["list"].append(r["marks"]["list"])
                out[cache]["online"].append(r["marks"]["online"])
                out[cache]["transferred"].append(r["transferred"])
    return out


# ---- messages ------------------------------------------------------------------------------------
async def talking_pages(pages: Pages, a: str, b: str) -> None:
    """Pages ``a`` and ``b``: two new users in one accepted 1:1 conversation, open in both."""
    user_a = await pages.sign_up(a)
    user_b = await pages.sign_up(b)
    if (await pages.call("start", name=a, peer=user_b))["error"] is not None:
        raise RuntimeError("could not start the conversation")
    await pages.call("invitations", name=b, wait_for=user_a.split("@")[0])
    if (await pages.call("accept", name=b, **{"from": user_a}))["error"] is not None:
        raise RuntimeError("could not accept the conversation")
    await pages.call("text", name=a, selector="#conversation-status", wait_for="End-to-end")


async def page_to_page(pages: Pages, a: str, b: str, n: int, warmup: int) -> dict[str, list[float]]:
    """Click in one page to text in the other, turns alternating; and the sender's own view."""
    delivered, sent = [], []
    for i in range(warmup + n):
        sender, receiver = (a, b) if i % 2 == 0 else (b, a)
        text = f"page message {i} {uuid.uuid4().hex[:6]}"
        await pages.call("watch_text", name=receiver, text=text)
        await pages.call("watch_text", name=sender, text=text)
        clicked = await pages.call("timed_send", name=sender, text=text)
        shown = await pages.call("seen_text", name=receiver, text=text)
        own = await pages.call("seen_text", name=sender, text=text)
        if i >= warmup:
            delivered.append(shown - clicked)
            sent.append(own - clicked)
    return {"delivered": delivered, "sent": sent}


class PythonUser:
    """A roost.client user whose realtime listener notes when each message was decrypted."""

    def __init__(self, client: RoostClient) -> None:
        self.client, self.groups = client, Groups(client)
        self.decrypted: dict[str, float] = {}
        self.arrived = asyncio.Condition()
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def register(cls, url: str) -> PythonUser:
        client = await RoostClient.register(url, unique("py"))
        await client.publish_key_packages(2)
        return cls(client)

    async def on_event(self, e: GroupEvent) -> None:
        if e.kind == "message" and e.message is not None:
            self.decrypted.setdefault(e.message, time.time() * 1000)
            async with self.arrived:
                self.arrived.notify_all()

    def listen(self) -> None:
        self.task = asyncio.create_task(self.groups.listen(self.on_event, stop=self.stop))

    async def decrypted_at(self, text: str, timeout: float = 30.0) -> float:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: text in self.decrypted), timeout=timeout
            )
        return self.decrypted[text]

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout=15)
        await self.client.aclose()


async def page_and_python(
    pages: Pages, url: str, name: str, n: int, warmup: int
) -> dict[str, list[float]]:
    """Page ``name`` and a roost.client user in one 1:1 conversation (the page starts it):
    click to decrypted in Python, and Python's send to the text in the page."""
    py = await PythonUser.register(url)
    try:
        await pages.sign_up(name)
        if (await pages.call("start", name=name, peer=py.client.user_id))["error"] is not None:
            raise RuntimeError("could not start the conversation with the roost.client user")
        [conn] = [c for c in await py.client.connections() if c.state == "pending"]
        _, joined = await py.groups.accept_connection(conn.connection_id)
        if joined is None or joined.kind != "joined":
            raise RuntimeError("the roost.client user did not join from the page's Welcome")
        gid = joined.group_id
        await pages.call("text", name=name, selector="#conversation-status", wait_for="End-to-end")
        py.listen()

        to_python, to_page = [], []
        for i in range(warmup + n):
            text = f"to python {i} {uuid.uuid4().hex[:6]}"
            clicked = await pages.call("timed_send", name=name, text=text)
            decrypted = await py.decrypted_at(text)
            text = f"to the page {i} {uuid.uuid4().hex[:6]}"
            await pages.call("watch_text", name=name, text=text)
            before = time.time() * 1000
            await py.groups.send(gid, text)
            shown = await pages.call("seen_text", name=name, text=text)
            if i >= warmup:
                to_python.append(decrypted - clicked)
                to_page.append(shown - before)
        return {"to_python": to_python, "to_page": to_page}
    finally:
        await py.close()


# ---- table ---------------------------------------------------------------------------------------
def table(
    bundle: tuple[list[tuple[str, int, int]], set[str]],
    first: dict[str, list[float]],
    resumed: dict[str, dict[str, list[float]]],
    p2p: dict[str, list[float]],
    py: dict[str, list[float]],
) -> str:
    files, encodings = bundle
    lines = []
    head = f"{'bundle file (what / loads)':<40} | {'bytes':>9} | {'gzip -9':>9}"
    lines += [head, "-" * len(head)]
    for name, raw, gz in files:
        lines.append(f"{name:<40} | {raw:>9,} | {gz:>9,}")
    total = (sum(r for _, r, _ in files), sum(g for _, _, g in files))
    lines.append(f"{'total':<40} | {total[0]:>9,} | {total[1]:>9,}")
    lines.append(f"Content-Encoding served: {', '.join(sorted(encodings))}")
    lines.append("")

    head = f"{'measurement (ms)':<62} | {'median':>7} | {'p95':>7} | {'n':>3}"
    lines += [head, "-" * len(head)]

    def row(label: str, values: list[float]) -> None:
        lines.append(
            f"{label:<62} | {pct(values, 50):>7.1f} | {pct(values, 95):>7.1f} | {len(values):>3}"
        )

    row("first load -> sign-in form usable, cold cache (new profile)", first["cold"])
    row("first load -> sign-in form usable, warm cache (reload)", first["warm"])
    for cache in ("cold", "warm"):
        row(f"signed-in reload -> conversation list shown, {cache} cache", resumed[cache]["list"])
        row(f"signed-in reload -> realtime Online, {cache} cache", resumed[cache]["online"])
    row("message page -> page: click -> text in the receiver's page", p2p["delivered"])
    row("  the sender's page: click -> shown as sent", p2p["sent"])
    row("message page -> roost.client: click -> decrypted", py["to_python"])
    row("message roost.client -> page: send -> text in the page", py["to_page"])
    kib = {c: pct(resumed[c]["transferred"], 50) / 1024 for c in ("cold", "warm")}
    lines.append("")
    lines.append(
        f"fetched per signed-in reload (median): {kib['cold']:.0f} KiB cold, "
        f"{kib['warm']:.0f} KiB warm"
    )
    return "\n".join(lines)


def progress(what: str) -> None:
    print(what, file=sys.stderr)


async def run(a: argparse.Namespace) -> str:
    load0 = os.getloadavg()
    async with bench_server("sqlite", "", port=a.port or None) as srv:
        print(f"roost serve pid {srv.pid} at {srv.url}", file=sys.stderr)
        bundle = bundle_sizes(srv.url)
        browser = await asyncio.to_thread(Browser)
        try:
            pages = Pages(browser, srv.url)
            progress("first loads")
            first = await first_loads(pages, a.loads, a.warmup)
            progress("page to page")
            await talking_pages(pages, "alice", "bob")
            p2p = await page_to_page(pages, "alice", "bob", a.messages, a.warmup)
            progress("signed-in reloads")
            resumed = await signed_in_reloads(pages, "bob", a.loads, a.warmup)
            progress("page and roost.client")
            py = await page_and_python(pages, srv.url, "carol", a.messages, a.warmup)
            version = browser.version
        finally:
            await asyncio.to_thread(browser.close)
    load1 = os.getloadavg()
    return (
        f"Web messenger, roost serve (SQLite) on loopback, headless Chromium {version}\n"
        f"load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load0)}, "
        f"after: {' '.join(f'{x:.2f}' for x in load1)}; {os.cpu_count()} cores\n\n"
        + table(bundle, first, resumed, p2p, py)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loads", type=int, default=20, help="measured loads per load row")
    p.add_argument("--messages", type=int, default=30, help="measured messages per row")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured loads/messages first")
    p.add_argument("--port", type=int, default=0, help="the server's port (default: a free one)")
    a = p.parse_args()
    reason = unavailable(browser=True)
    if reason is not None:
        sys.exit(f"web_bench: {reason}")
    print(asyncio.run(run(a)))


if __name__ == "__main__":
    main()
