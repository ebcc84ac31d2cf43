"""The redaction filter on its own: each shape of secret it knows, and SQL records dropped."""

from __future__ import annotations

import logging

from roost.server.observability.redaction import RedactionFilter, redact, redact_target


def _record(name: str, msg: str, args: tuple[object, ...] = (), level: int = logging.INFO):
    return logging.LogRecord(name, level, "", 0, msg, args, None)


def test_secret_shapes_are_replaced() -> None:
    cases = {
        "< authorization: Bearer abc.def-123": "abc.def-123",
        "< cookie: session=s3cr3t": "s3cr3t",
        "< roost-queue-key: K3yK3yK3y": "K3yK3yK3y",
        '< TEXT \'{"type": "hello", "queue_keys": {"Qx1": "K9y"}}\' [50 bytes]': "K9y",
        '{"queue_id": "Qx2", "queue_key": "K8y"}': "K8y",
        "sent Bearer tok_9f8e7d with the request": "tok_9f8e7d",
        "POST /v1/groups?queue_id=Q-9zx&external_join=false": "Q-9zx",
        "GET /v1/directory?q=alice&cursor=CUR55": "CUR55",
        "GET /v1/queues/Qid123/messages": "Qid123",
        '< TEXT \'{"type": "hello", "queues": {"Qx1": 0}}\' [40 bytes]': "Qx1",
        "row ('$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA', 1)": "c2FsdA",
        '{"password": "hunter2", "name": "a"}': "hunter2",
    }
    for line, secret in cases.items():
        assert secret not in redact(line), line
    assert redact("GET /health 200") == "GET /health 200"
    assert "{queue_id}" in redact("POST /v1/queues/{queue_id}/messages 201")  # a route template


def test_sql_records_are_dropped_and_access_args_redacted() -> None:
    f = RedactionFilter()
    assert not f.filter(_record("sqlalchemy.engine.Engine", "[generated] %r", (("tok",),)))
    assert not f.filter(_record("aiosqlite", "executing %s", ("INSERT ...",), logging.DEBUG))
    assert f.filter(_record("sqlalchemy.engine.Engine", "pool failure", (), logging.ERROR))
    access = _record(
        "uvicorn.access",
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "POST", "/v1/groups?queue_id=SECRETQ", "1.1", 201),
    )
    assert f.filter(access)
    assert isinstance(access.args, tuple) and "SECRETQ" not in access.getMessage()
    ws = _record("uvicorn.error", "< %s", ("authorization: Bearer SECRETTOKEN",), logging.DEBUG)
    assert f.filter(ws) and "SECRETTOKEN" not in ws.getMessage()


def test_asset_routes_lose_every_id_including_the_domain_form() -> None:
    assert redact_target("/v1/assets/b.test/AbCdEf123") == "/v1/assets/…"
    assert redact_target("/federation/v1/assets/AbCdEf123") == "/federation/v1/assets/…"
    assert redact_target("/v1/queues/q1d/messages?after=3") == "/v1/queues/…/messages?after=…"


def test_request_lines_name_no_group_user_client_or_connection() -> None:
    """A text access line carries the caller's address: the ids in its path would say which
    groups, users and clients that caller deals with."""
    line = '127.0.0.1:5 - "PUT /v1/groups/R3JvdXA/roles/bob%40b.test HTTP/1.1" 204'
    assert redact(line) == '127.0.0.1:5 - "PUT /v1/groups/…/roles/… HTTP/1.1" 204'
    assert (
        redact_target("/v1/users/bob%40b.test/clients/8d3f-11/keypackages/claim?cipher_suite=1")
        == "/v1/users/…/clients/…/keypackages/claim?cipher_suite=…"
    )
    assert redact_target("/v1/connections/c-1/accept") == "/v1/connections/…/accept"
    assert redact_target("/v1/clients/8d3f-11") == "/v1/clients/…"
    assert (
        redact("POST https://b.test:8449/federation/v1/groups/R3JvdXA/messages 200")
        == "POST https://b.test:8449/federation/v1/groups/…/messages 200"
    )
    # route templates and collection paths stay; so does a file path that looks alike
    assert redact_target("/v1/groups/{group_id}/messages") == "/v1/groups/{group_id}/messages"
    assert (
        redact("database at /srv/users/v1/groups/x.db") == "database at /srv/users/v1/groups/x.db"
    )
