"""Privacy audit: what a complete copy of the stored state says about who talks to whom.

Runs a scenario on two real homeservers (a.test on SQLite; b.test on PostgreSQL when
``ROOST_TEST_POSTGRES_URL`` is set, else SQLite too): users, groups (one with a federated
member), messages, an asset, a display-name change, a client removal and an account deletion,
all through ``roost.client``. Then, with the servers stopped, it reads EVERY table of each
database (the schema is introspected, nothing is listed by hand), the asset store and the
info-level log, and searches every cell for the ids the scenario created (in their raw, hex
and base64 forms). A row that holds a known user or client next to a known group, queue,
message or another user is a link; the report counts such rows per table and column for each
question:

  (a)/(b) group membership  - group id and user/client id in one row
  (c) message sender        - message id and user/client id in one row
  (d) queue owner           - queue id and user/client id in one row (queue keys, which only
                              clients hold, are searched for as well)
  asset uploader            - asset id and user/client id in one row
  (e) who knows whom        - two different users in one row
  residue                   - ids of the deleted account / removed client still stored

The analysis knows nothing about today's tables, so it keeps measuring after a redesign.

Then the curious operator's view, who also holds the server's seal key file: with the server's
own reading code and that file (but no group key: the DS keeps those in memory only), how many
groups' member lists, roles and MLS states open, and how many queues' push seals name their
creating client.

    .venv/bin/python benchmarks/privacy_audit.py
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import sys
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the federation test harness lives under tests/

from tests.conftest import _admin, _with_database  # noqa: E402
from tests.convergence.world import connect, eventually  # noqa: E402
from tests.federation.harness import Federation, make_federation  # noqa: E402

from roost.client import RoostClient  # noqa: E402
from roost.client.assets import upload_asset  # noqa: E402
from roost.client.groups import Groups  # noqa: E402
from roost.protocol.base64url import unb64u  # noqa: E402

A, B = "a.test", "b.test"
TIMEOUT = 60.0
PASSWORD = "correct horse battery staple audit"
# The info level is what an operator keeps; the audit reads that log.
LOG_ENV = {"ROOST_LOG_LEVEL": "info"}

# Kinds of ids the scenario knows; "who" kinds identify a person or device.
WHO = ("user", "client")
QUESTIONS = {
    "a/b membership": ("group",),
    "c sender": ("message",),
    "d queue owner": ("queue",),
    "asset uploader": ("asset",),
}


# ---- what the scenario created ---------------------------------------------------------------
@dataclass(frozen=True)
class Known:
    kind: (
        str  # user, client, group, queue, queue key, message, connection, asset, secret, residue-*
    )
    label: str  # a readable name for the report ("alice", "G1", ...)
    value: str | bytes

    def needles(self) -> list[bytes]:
        """The forms this id may take when stored or logged."""
        raw = self.value.encode() if isinstance(self.value, str) else self.value
        forms = {raw}
        if isinstance(self.value, bytes):
            forms |= {
                raw.hex().encode(),
                base64.urlsafe_b64encode(raw).rstrip(b"=") if raw else b"",
                base64.b64encode(raw).rstrip(b"=") if raw else b"",
            }
        else:
            forms.add(quote(self.value, safe="").encode())
        return [f for f in forms if len(f) >= 6]


@dataclass
class Scenario:
    known: list[Known] = field(default_factory=list)

    def add(self, kind: str, label: str, value: str | bytes) -> None:
        self.known.append(Known(kind, label, value))


async def run_scenario(fed: Federation) -> Scenario:
    """Drive the users through the client API; return every id they created."""
    s = Scenario()
    tag = uuid.uuid4().hex[:6]
    clients: list[RoostClient] = []

    async def register(domain: str, name: str, password: str | None = None) -> RoostClient:
        c = await RoostClient.register(fed[domain].url, f"{name}-{tag}", password=password)
        clients.append(c)
        await c.publish_key_packages(4)
        s.add("user", name, c.user_id)
        s.add("client", f"{name}'s client", c.client_uuid)
        s.add("secret", f"{name}'s token", await c.bearer_token())
        return c

    try:
        alice = await register(A, "alice", PASSWORD)
        bob = await register(A, "bob")
        dave = await register(A, "dave")
        carol = await register(B, "carol")  # the federated member
        s.add("secret", "password", PASSWORD)
        alice2 = await RoostClient.add_with_password(fed[A].url, alice.user_id, PASSWORD)
        clients.append(alice2)
        await alice2.publish_key_packages(4)
        s.add("client", "alice's second client", alice2.client_uuid)
        s.add("secret", "alice2's token", await alice2.bearer_token())

        old_name, new_name = f"Alice Old {tag}", f"Alice New {tag}"
        await alice.set_display_name(old_name)
        await alice.set_display_name(new_name)
        s.add("residue-name", "alice's old display name", old_name)

        for a, b in ((alice, bob), (alice, carol), (bob, dave)):
            await connect(a, b)
        for c in await alice.connections():
            s.add("connection", "connection", c.connection_id)
        for c in await bob.connections():
            s.add("connection", "connection", c.connection_id)

        g = {c.client_id: Groups(c) for c in (alice, bob, carol, dave, alice2)}

        async def group(label: str, creator: RoostClient, *others: RoostClient) -> bytes:
            gid = (await g[creator.client_id].create()).group_id
            s.add("group", label, gid)
            await g[creator.client_id].invite(gid, [o.user_id for o in others])
            for o in others:
                await _wait_joined(g[o.client_id], gid)
            return gid

        g1 = await group("G1", alice, bob, carol)
        g2 = await group("G2", alice, bob)
        g3 = await group("G3", bob, dave)
        for c in (alice, bob, carol, dave):
            # one queue per membership (and an old home's shared one, if any)
            for qid in g[c.client_id].queues():
                s.add("queue", f"{c.user_id}'s group queue {qid[:4]}", unb64u(qid))

        ref = await upload_asset(alice, b"a photo " + tag.encode())
        s.add("asset", "asset", ref.asset_id)
        s.add("secret", "asset capability", ref.capability)
        for gid, sender, text in (
            (g1, alice, f"hello G1 {tag}"),
            (g1, carol, f"carol says hi {tag}"),
            (g2, bob, f"bob in G2 {tag}"),
            (g3, dave, f"dave in G3 {tag}"),
            (g1, alice, f"photo {ref.asset_id}"),
        ):
            sent = await g[sender.client_id].send(gid, text)
            s.add("message", f"{text.split()[0]} by {sender.user_id}", sent.message_id)
            s.add("secret", "plaintext", text)
            s.add("payload", "ciphertext", sent.ciphertext[-32:])
        queue = await bob.create_queue()
        payload = f"queue payload {tag}".encode()
        await bob.enqueue(queue, payload)
        await bob.fetch_queue(queue)  # read with its key, like any owner operation
        s.add("queue", "bob's own queue", unb64u(queue))  # the wire form of 16 bytes
        s.add("payload", "queue payload", payload)
        for c in (alice, bob, carol):
            await g[c.client_id].sync()
        # Every queue key the clients hold: only the client keeps one (the server its hash).
        for c in (alice, bob, carol, dave):
            for qid, key in c.queue_keys().items():
                s.add("queue key", f"key of {c.user_id}'s queue {qid[:4]}", unb64u(key))
        # The group keys: the members hold them, the DS keeps a check value only.
        for label, gid in (("G1", g1), ("G2", g2), ("G3", g3)):
            group_key = g[alice.client_id if label != "G3" else bob.client_id].group_key(gid)
            assert group_key is not None, f"{label} has no group key"
            s.add("secret", f"group key of {label}", group_key)

        await alice.remove_client(alice2.client_uuid)
        s.add("residue-client", "alice's removed client", alice2.client_uuid)
        s.add("residue-user", "dave (deleted)", dave.user_id)
        s.add("residue-client", "dave's client (deleted)", dave.client_uuid)
        await dave.delete_account()
        await asyncio.sleep(1.0)  # let the outboxes hand the events over
    finally:
        for c in clients:
            await c.aclose()
    return s


async def _wait_joined(groups: Groups, gid: bytes) -> None:
    async def probe() -> bool:
        return any(e.kind == "joined" and e.group_id == gid for e in await groups.sync())

    await eventually(probe, TIMEOUT, "a member joins")


# ---- reading the stored state ----------------------------------------------------------------
Row = tuple[Any, ...]


def sqlite_tables(path: Path) -> dict[str, tuple[list[str], list[Row]]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        out = {}
        for name in names:
            cur = con.execute(f'SELECT * FROM "{name}"')
            out[name] = ([d[0] for d in cur.description], cur.fetchall())
        return out
    finally:
        con.close()


async def postgres_tables(url: str) -> dict[str, tuple[list[str], list[Row]]]:
    import asyncpg

    con = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        names = [
            r[0]
            for r in await con.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        out = {}
        for name in names:
            typed = await con.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                name,
            )
            cols = [r[0] for r in typed]
            # bytes stay bytes; every other type is read as text (json, arrays, numbers)
            select = ", ".join(f'"{c}"' if kind == "bytea" else f'"{c}"::text' for c, kind in typed)
            rows = await con.fetch(f'SELECT {select} FROM "{name}"')
            out[name] = (cols, [tuple(r) for r in rows])
        return out
    finally:
        await con.close()


def as_bytes(cell: Any) -> bytes:
    if cell is None:
        return b""
    if isinstance(cell, bytes | bytearray | memoryview):
        return bytes(cell)
    return str(cell).encode()


# ---- analysis ---------------------------------------------------------------------------------
@dataclass
class Finding:
    """Rows of one table that link known ids, and the columns the ids were in."""

    rows: int = 0
    columns: set[str] = field(default_factory=set)
    linked: set[str] = field(default_factory=set)  # labels of the non-"who" ids linked


@dataclass
class SourceReport:
    name: str  # "a.test db", "b.test log", ...
    # question -> table -> finding
    links: dict[str, dict[str, Finding]] = field(default_factory=lambda: defaultdict(dict))
    # kind -> labels of known ids found anywhere in this source
    present: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def locate(cell: bytes, known: Iterable[Known]) -> list[Known]:
    return [k for k in known if cell and any(n in cell for n in k.needles())]


def analyse_tables(
    name: str, tables: dict[str, tuple[list[str], list[Row]]], scenario: Scenario
) -> SourceReport:
    rep = SourceReport(name)
    for table, (cols, rows) in sorted(tables.items()):
        for row in rows:
            found: list[tuple[str, Known]] = []
            for col, cell in zip(cols, row, strict=True):
                for k in locate(as_bytes(cell), scenario.known):
                    found.append((col, k))
                    rep.present[k.kind].add(k.label)
            _record_links(rep, table, found)
    return rep


def _record_links(rep: SourceReport, table: str, found: list[tuple[str, Known]]) -> None:
    who = [(c, k) for c, k in found if k.kind in WHO or k.kind == "residue-user"]
    users = {k.value for _, k in found if k.kind in ("user", "residue-user")}
    for question, kinds in QUESTIONS.items():
        what = [(c, k) for c, k in found if k.kind in kinds]
        # an id that contains the other (a client id inside a group id) is not a link
        pairs = [
            (cw, cx)
            for cw, kw in who
            for cx, kx in what
            if as_bytes(kw.value) not in as_bytes(kx.value)
        ]
        if pairs:
            f = rep.links[question].setdefault(table, Finding())
            f.rows += 1
            f.columns |= {c for p in pairs for c in p}
            f.linked |= {k.label for _, k in what}
    if len(users) >= 2:
        f = rep.links["e who knows whom"].setdefault(table, Finding())
        f.rows += 1
        f.columns |= {c for c, k in found if k.kind in ("user", "residue-user")}
    for c, k in found:
        if k.kind.startswith("residue"):
            f = rep.links["residue"].setdefault(table, Finding())
            f.rows += 1
            f.columns.add(c)


def analyse_files(name: str, root: Path, files: Iterable[Path], scenario: Scenario) -> SourceReport:
    """A file is a "row" whose cells are its path (relative to ``root``) and its content."""
    tables = {}
    rows = []
    for p in files:
        if p.is_file():
            rows.append((str(p.relative_to(root)), p.read_bytes()))
    tables[name] = (["path", "content"], rows)
    return analyse_tables(name, tables, scenario)


@dataclass
class OperatorView:
    """What the curious operator opens with the server's own code and its seal key file, but
    no group key (the DS holds those in memory only): per DS record, opened of stored."""

    domain: str
    groups: int = 0
    member_lists: int = 0  # groups whose member rows open (who is in it, their queues)
    role_lists: int = 0
    mls_states: int = 0  # the tree and GroupInfo, whose credentials name every member
    queues: int = 0
    queue_clients: int = 0  # queues whose push seal names the creating client


async def operator_view(domain: str, server: Any) -> OperatorView:
    import sqlalchemy as sa

    from roost.server.config import build_config
    from roost.server.delivery.at_rest import AtRest, SealBroken
    from roost.server.delivery.group_store import GroupStore
    from roost.server.delivery.tables import ds_groups
    from roost.server.queues.seal import QueueSeal
    from roost.server.queues.tables import queues
    from roost.server.seal_key import SealKeyFile
    from roost.server.store import Database

    config = build_config({}, server.env)  # the server's own configuration
    key_file = SealKeyFile(config.queue_seal_key_path)
    db = Database(config.sqlalchemy_url)
    view = OperatorView(domain)
    store = GroupStore(db, AtRest(key_file))  # no group key held
    try:
        async with db.engine.connect() as conn:
            for row in (await conn.execute(sa.select(ds_groups))).all():
                view.groups += 1
                for field_name, opening in (
                    ("member_lists", lambda r=row: store.members(conn, r.id)),
                    ("role_lists", lambda r=row: store.roles(conn, r.id)),
                ):
                    try:
                        await opening()
                        setattr(view, field_name, getattr(view, field_name) + 1)
                    except SealBroken:
                        pass
                try:
                    store.state_of(row)
                    store.group_info_of(row)
                    view.mls_states += 1
                except SealBroken:
                    pass
            seal = QueueSeal(key_file)
            for (push_seal,) in (await conn.execute(sa.select(queues.c.push_seal))).all():
                view.queues += 1
                view.queue_clients += push_seal is not None and seal.open(push_seal) is not None
    finally:
        await db.engine.dispose()
    return view


@dataclass
class Audit:
    scenario: Scenario
    sources: list[SourceReport]
    logs: dict[str, Path] = field(default_factory=dict)  # domain -> its log file
    operator: list[OperatorView] = field(default_factory=list)

    def source(self, name: str) -> SourceReport:
        return next(s for s in self.sources if s.name == name)


async def analyse(fed: Federation, scenario: Scenario) -> Audit:
    """Read every server's database, asset store and log (servers stopped: all flushed)."""
    sources = []
    for domain, server in fed.servers.items():
        if server.database_url:
            tables = await postgres_tables(server.database_url)
        else:
            tables = sqlite_tables(server.data_dir / "roost.db")
        sources.append(analyse_tables(f"{domain} db", tables, scenario))
        assets = server.data_dir / "assets"
        sources.append(
            analyse_files(f"{domain} assets", assets, sorted(assets.rglob("*")), scenario)
        )
        sources.append(analyse_files(f"{domain} log", server.data_dir, [server.log_path], scenario))
    return Audit(
        scenario,
        sources,
        {d: s.log_path for d, s in fed.servers.items()},
        [await operator_view(d, s) for d, s in fed.servers.items()],
    )


def _answer(audit: Audit, question: str) -> list[str]:
    out = []
    for src in audit.sources:
        for table, f in sorted(src.links.get(question, {}).items()):
            out.append(f"{src.name}: {table}({', '.join(sorted(f.columns))}) {f.rows} rows")
    return out


def format_report(audit: Audit) -> str:
    lines = [f"{'question':<18} {'answerable':<10} where (table(columns) linking rows)"]
    for q in (*QUESTIONS, "e who knows whom", "residue"):
        where = _answer(audit, q)
        lines.append(f"{q:<18} {'YES' if where else 'no':<10} {where[0] if where else '-'}")
        lines += [f"{'':<29} {w}" for w in where[1:]]
    lines.append("")
    lines.append("known ids found per source (kind: count of distinct ids)")
    for src in audit.sources:
        kinds = ", ".join(f"{k}: {len(v)}" for k, v in sorted(src.present.items())) or "none"
        lines.append(f"  {src.name:<14} {kinds}")
        for kind in ("secret", "payload", "queue key"):
            if src.present.get(kind):
                lines.append(f"  {'':<14} {kind}: {', '.join(sorted(src.present[kind]))}")
    lines.append("")
    lines.append("the operator's view (the seal key file, no group key): opened / stored")
    for v in audit.operator:
        lines.append(
            f"  {v.domain:<14} member lists {v.member_lists}/{v.groups}, roles"
            f" {v.role_lists}/{v.groups}, MLS states {v.mls_states}/{v.groups},"
            f" queue creators {v.queue_clients}/{v.queues}"
        )
    return "\n".join(lines)


# ---- running it -------------------------------------------------------------------------------
async def audit_federation(fed: Federation) -> Audit:
    scenario = await run_scenario(fed)
    fed.stop()  # flush logs; nothing writes while the state is read
    return await analyse(fed, scenario)


def start_federation(base: Path, database_url: Callable[[], str] | None) -> Federation:
    return make_federation(
        base,
        (A, B),
        engine="sqlite",
        engine_per_domain={B: "postgresql"} if database_url else None,
        database_url=database_url,
        extra_env=LOG_ENV,
    )


def main() -> None:
    pg = os.environ.get("ROOST_TEST_POSTGRES_URL")
    made: list[str] = []

    def database() -> str:
        assert pg
        name = f"roost_audit_{uuid.uuid4().hex[:10]}"
        _admin(pg, f'CREATE DATABASE "{name}"')
        made.append(name)
        return _with_database(pg, name)

    with tempfile.TemporaryDirectory(prefix="roost-privacy-") as tmp:
        fed = start_federation(Path(tmp), database if pg else None)
        try:
            audit = asyncio.run(audit_federation(fed))
        finally:
            fed.stop()
            for name in made:
                _admin(pg or "", f'DROP DATABASE IF EXISTS "{name}"')
    engines = {d: s.engine for d, s in fed.servers.items()}
    print(f"privacy audit; engines: {engines}")
    print(format_report(audit))


if __name__ == "__main__":
    main()


__all__ = ["Audit", "Known", "Scenario", "audit_federation", "format_report"]
