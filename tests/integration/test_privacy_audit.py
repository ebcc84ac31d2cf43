"""The privacy audit (benchmarks/privacy_audit.py) on two real homeservers: a.test on SQLite,
b.test on SQLite and (when PostgreSQL is configured) on PostgreSQL.

Three kinds of assertion on one run of its scenario:
- what users rely on today and must keep: the info-level logs hold no bearer token,
  password, asset capability, queue id, queue key, message id, plaintext, ciphertext or
  queue payload;
- what queue keys brought: no queue row names its client, so a queue that is in no group is
  tied to nobody anywhere, and no database holds a queue's key; no row names an asset's
  uploader;
- the audit's self-check: the links that exist today (the DS's member rows tie a group to
  its members' clients and their queues, a connection row to both users) are found, so a
  "no" in its report means the tool looked and found nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not a package

from benchmarks.privacy_audit import (  # noqa: E402
    Audit,
    audit_federation,
    format_report,
    start_federation,
)

from tests.conftest import run_off_loop  # noqa: E402

ENGINES = ["sqlite"] + (["postgresql"] if os.environ.get("ROOST_TEST_POSTGRES_URL") else [])


@pytest.fixture(scope="module", params=ENGINES)
def audit(request, tmp_path_factory) -> Audit:
    database = request.getfixturevalue("postgres_database") if request.param != "sqlite" else None
    fed = start_federation(tmp_path_factory.mktemp(f"privacy-{request.param}"), database)
    try:
        result = run_off_loop(audit_federation, fed)  # one scenario for both tests
    finally:
        fed.stop()
    print(format_report(result))  # shown with -s: the table docs/privacy.md quotes
    return result


def test_info_logs_hold_no_secret_queue_id_or_payload(audit: Audit) -> None:
    for domain, path in audit.logs.items():  # they did log the scenario's requests
        assert "/v1/" in path.read_text(errors="replace"), f"{domain} logged no request"
    for src in audit.sources:
        if not src.name.endswith(" log"):
            continue
        for kind in ("secret", "payload", "queue", "queue key", "message"):
            assert not src.present.get(kind), f"{src.name} holds {kind}: {src.present[kind]}"


def test_no_queue_row_names_its_client_and_no_database_holds_a_queue_key(audit: Audit) -> None:
    keys = [k for k in audit.scenario.known if k.kind == "queue key"]
    assert len(keys) >= 4, "the scenario's clients hold too few queue keys"
    for name in ("a.test db", "b.test db"):
        db = audit.source(name)
        owners = db.links.get("d queue owner", {})
        assert "queues" not in owners, f"{name}: a queues row names a client or user"
        # bob's queue is in no group: nothing anywhere says whose it is
        for table, finding in owners.items():
            assert "bob's own queue" not in finding.linked, f"{name}: {table} ties it to bob"
        assert not db.present.get("queue key"), f"{name} holds {db.present['queue key']}"


def test_the_delivery_service_tables_link_nobody_to_a_group_or_queue(audit: Audit) -> None:
    assert [k for k in audit.scenario.known if k.label.startswith("group key")], "no group keys"
    for name in ("a.test db", "b.test db"):
        db = audit.source(name)
        # no secret (group keys, plaintexts, asset capabilities) in either database
        assert not db.present.get("secret"), f"{name} holds {db.present['secret']}"
        for question in ("a/b membership", "d queue owner", "e who knows whom"):
            ds_tables = sorted(t for t in db.links.get(question, {}) if t.startswith("ds_"))
            assert not ds_tables, f"{name}: {question} answerable from {ds_tables}"


def test_no_row_names_an_assets_uploader(audit: Audit) -> None:
    for name in ("a.test db", "b.test db"):
        db = audit.source(name)
        assert not db.links.get("asset uploader"), f"{name}: {db.links['asset uploader']}"
    # the asset is there to be found: its row (and blob) hold its id
    assert audit.source("a.test db").present.get("asset")


def test_audit_self_check_finds_the_links_that_exist_today(audit: Audit) -> None:
    db = audit.source("a.test db")
    assert db.links["e who knows whom"], "no connection between two users found"
    # every kind of id the scenario made shows up somewhere in the home server's database
    for kind in ("user", "client", "group", "queue"):
        assert db.present.get(kind), f"no {kind} id found in a.test's database"
    # the federated member's own server knows its user and their connection
    assert audit.source("b.test db").links["e who knows whom"]
