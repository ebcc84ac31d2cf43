"""The privacy audit (benchmarks/privacy_audit.py) on two real homeservers: a.test on SQLite,
b.test on SQLite and (when PostgreSQL is configured) on PostgreSQL.

Four kinds of assertion on one run of its scenario:
- what users rely on today and must keep: the info-level logs hold no bearer token,
  password, asset capability, queue id, queue key, message id, plaintext, ciphertext or
  queue payload;
- what queue keys brought: no queue row names its client, so a queue that is in no group is
  tied to nobody anywhere, and no database holds a queue's key; no row names an asset's
  uploader;
- what sealing under group keys brought: no row of any database, the asset stores or the logs
  ties a user or client to a group, a message or a queue, nor keeps a deleted account's ids,
  and the operator's seal key file opens no keyed group's member rows, roles or MLS state;
- the audit's self-check: the links that exist today (a connection row ties both users) are
  found and every kind of id the scenario made shows up somewhere, so a "no" in its report
  means the tool looked and found nothing.
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


def test_no_stored_row_says_who_is_in_a_group_who_sent_or_whose_queue(audit: Audit) -> None:
    assert [k for k in audit.scenario.known if k.label.startswith("group key")], "no group keys"
    for src in audit.sources:
        # no secret (group keys, plaintexts, asset capabilities) anywhere
        assert not src.present.get("secret"), f"{src.name} holds {src.present['secret']}"
        for question in ("a/b membership", "c sender", "d queue owner", "residue"):
            assert not src.links.get(question), f"{src.name}: {question}: {src.links[question]}"
        # the connection records (which the requirements need) are the only rows with two users
        assert set(src.links.get("e who knows whom", {})) <= {"connections"}, src.name


def test_the_operator_cannot_open_a_keyed_groups_state_without_its_key(audit: Audit) -> None:
    # Every group of the scenario has a group key; the operator holds the seal key file.
    home = next(v for v in audit.operator if v.domain == "a.test")
    assert home.groups == 3, home
    for v in audit.operator:
        assert (v.member_lists, v.role_lists, v.mls_states) == (0, 0, 0), v
    # What the file still opens, for push (docs/privacy.md): the client that made a queue.
    assert home.queue_clients == home.queues > 0, home


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
