"""Server identity across two real homeserver processes (a.test, b.test): published keys,
signed requests accepted, forged, replayed, stale and misdirected ones refused, key rotation,
and the federation policy applied in both directions.

Forged requests need a signer that is not a server: ``sign_as`` signs with a key read from a
server's own database (the same ``signing`` code the servers use), so a test can then change
exactly one thing. Requests made by a server itself go through ``roost admin federation ping``,
which sends a signed ``GET /federation/v1/whoami`` with that server's configuration and key
(the outbound-refusal test builds the same client in-process, to point c.test at a listener).
Policy changes go through ``FederationPolicyStore``, the store the CLI itself uses.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from roost.server.config import ConfigError, build_config
from roost.server.federation import signing
from roost.server.federation.identity import SIGNING_KEY_CACHE_SECONDS, ServerIdentity, SigningKey
from roost.server.federation.policy import FederationPolicyStore
from roost.server.federation.resolver import Resolver
from roost.server.federation.transport import FederationRefused, RemoteUnavailable
from roost.server.federation.wiring import build_federation
from roost.server.store import Database
from roost.server.store.migrate import upgrade

from .conftest import FEDERATION_ENGINES
from .harness import POLICY_CACHE_SECONDS, Federation, Homeserver

WHOAMI = "/federation/v1/whoami"


@pytest.fixture(scope="module", params=FEDERATION_ENGINES)
def fed(request, make_federation) -> Federation:
    return make_federation(("a.test", "b.test"), engine=request.param, policy="open")


async def current_key(server: Homeserver) -> SigningKey:
    """The server's signing key, read from its database."""
    db = Database(build_config({}, server.env).sqlalchemy_url)
    try:
        key = await ServerIdentity(db).current()
    finally:
        await db.dispose()
    assert key is not None
    return key


async def set_policy(
    server: Homeserver, mode: str, *, allow: tuple[str, ...] = (), block: tuple[str, ...] = ()
) -> None:
    """Make ``server``'s stored policy exactly this, through the store ``roost admin
    federation`` uses (in-process: a CLI run per list entry costs seconds)."""
    db = Database(build_config({}, server.env).sqlalchemy_url)
    try:
        store = FederationPolicyStore(db, cache_seconds=0)
        current = await store.load()
        await store.set_mode(mode)
        for kind, have, wanted in (
            ("allow", current.allow, allow),
            ("block", current.block, block),
        ):
            for d in set(wanted) - have:
                await store.add(kind, d)
            for d in have - set(wanted):
                await store.remove(kind, d)
    finally:
        await db.dispose()


def sign_as(
    key: SigningKey,
    *,
    origin: str = "a.test",
    destination: str = "b.test",
    method: str = "GET",
    path: str = WHOAMI,
    query: str = "",
    body: bytes = b"",
    created: int | None = None,
    components: tuple[str, ...] = signing.COVERED,
) -> dict[str, str]:
    """Signed headers exactly as a server makes them (``components`` may leave some out)."""
    headers = {
        "content-digest": signing.content_digest(body),
        "roost-origin": origin,
        "roost-destination": destination,
    }
    created = int(time.time()) if created is None else created
    params = signing.SignatureParams(
        components, created, created + 300, signing.new_nonce(), key.key_id, "ed25519"
    )
    target = signing.Target(method, path, query)
    sig = key.private_key.sign(signing.signature_base(target, headers, params))
    headers["signature-input"] = f"roost={params.serialize()}"
    headers["signature"] = f"roost=:{base64.b64encode(sig).decode()}:"
    return headers


async def send(
    server: Homeserver,
    headers: dict[str, str],
    *,
    method: str = "GET",
    path: str = WHOAMI,
    query: str = "",
    body: bytes = b"",
) -> httpx.Response:
    url = server.url + path + (f"?{query}" if query else "")
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, url, headers=headers, content=body)


def assert_problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code


async def test_well_known_publishes_the_signing_key(fed: Federation):
    a = fed["a.test"]
    async with httpx.AsyncClient(timeout=30) as http:
        doc = (await http.get(a.url + "/.well-known/roost")).json()
        keys_doc = (await http.get(a.url + "/federation/v1/keys")).json()
    assert doc["home_domain"] == "a.test"
    assert doc["as_certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert doc["federation"]["api"] == "/federation/v1"
    published = doc["federation"]["keys"]
    assert keys_doc["keys"] == published and keys_doc["home_domain"] == "a.test"
    current = [k for k in published if k["retired_at"] is None]
    assert len(current) == 1
    key = await current_key(a)
    assert current[0]["key_id"] == key.key_id
    assert re.fullmatch(r"ed25519:[0-9a-f]{8}", key.key_id)
    assert current[0]["algorithm"] == "ed25519"
    raw = base64.urlsafe_b64decode(current[0]["public_key"] + "==")
    assert raw == key.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    # each server has its own key
    b_key = await current_key(fed["b.test"])
    assert b_key.public_key != key.public_key


async def test_a_real_server_request_is_accepted(fed: Federation):
    answer = fed["a.test"].admin_json("federation", "ping", "b.test")
    assert answer == {"origin": "a.test", "destination": "b.test"}
    answer = fed["b.test"].admin_json("federation", "ping", "a.test")
    assert answer == {"origin": "b.test", "destination": "a.test"}


async def test_correct_signature_accepted_then_replay_refused(fed: Federation):
    b = fed["b.test"]
    headers = sign_as(await current_key(fed["a.test"]), query="probe=1")
    r = await send(b, headers, query="probe=1")
    assert r.status_code == 200, r.text
    assert r.json() == {"origin": "a.test", "destination": "b.test"}
    assert_problem(await send(b, headers, query="probe=1"), 401, "replayed_request")
    # the maintenance sweep drops nonces once no signature carrying them could be fresh
    db = Database(build_config({}, b.env).sqlalchemy_url)
    try:
        fed_b = build_federation(db, build_config({}, b.env))
        await fed_b.client.aclose()
        await fed_b.verifier.sweep()  # now: this nonce is still fresh and kept
        assert_problem(await send(b, headers, query="probe=1"), 401, "replayed_request")
        fed_b.verifier.clock = lambda: time.time() + 2 * 300 + 5
        assert await fed_b.verifier.sweep() >= 1
    finally:
        await db.dispose()


async def test_forged_signatures_are_refused(fed: Federation):
    a, b = fed["a.test"], fed["b.test"]
    key = await current_key(a)
    # wrong key under A's key id
    impostor_private = Ed25519PrivateKey.generate()
    impostor = SigningKey(
        key.key_id,
        impostor_private,
        impostor_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )
    assert_problem(await send(b, sign_as(impostor)), 401, "invalid_signature")
    # tampered body: digest of the signed body, another body sent
    body = b'{"items":[]}'
    headers = sign_as(key, method="POST", body=body)
    r = await send(b, headers, method="POST", body=b'{"items":[1]}')
    assert_problem(r, 401, "invalid_signature")
    # tampered body with a matching (recomputed) digest: the signature no longer verifies
    headers["content-digest"] = signing.content_digest(b'{"items":[1]}')
    r = await send(b, headers, method="POST", body=b'{"items":[1]}')
    assert_problem(r, 401, "invalid_signature")
    # tampered path and query
    headers = sign_as(key, path="/federation/v1/keys")
    assert_problem(await send(b, headers), 401, "invalid_signature")
    headers = sign_as(key, query="x=1")
    assert_problem(await send(b, headers, query="x=2"), 401, "invalid_signature")
    # a covered component left out of the signature
    for missing in ("roost-destination", "@query", "content-digest"):
        partial = tuple(c for c in signing.COVERED if c != missing)
        r = await send(b, sign_as(key, components=partial))
        assert_problem(r, 401, "invalid_signature")
    # no signature at all
    assert_problem(await send(b, {"roost-origin": "a.test"}), 401, "invalid_signature")
    # the controls: correctly signed requests pass
    assert (await send(b, sign_as(key))).status_code == 200
    r = await send(b, sign_as(key, method="POST", body=body), method="POST", body=body)
    assert r.status_code == 200 and r.json()["body_bytes"] == len(body)


async def test_stale_or_future_signatures_are_refused(fed: Federation):
    b = fed["b.test"]
    key = await current_key(fed["a.test"])
    for skew in (-1000, +1000):
        r = await send(b, sign_as(key, created=int(time.time()) + skew))
        assert_problem(r, 401, "invalid_signature")
        assert "fresh" in r.json()["detail"]


async def test_wrong_destination_is_421(fed: Federation):
    b = fed["b.test"]
    key = await current_key(fed["a.test"])
    r = await send(b, sign_as(key, destination="c.test"))
    assert_problem(r, 421, "wrong_destination")


async def test_key_rotation(fed: Federation):
    a, b = fed["a.test"], fed["b.test"]
    old = await current_key(a)
    # B has A's keys cached from a request signed with the current key
    assert (await send(b, sign_as(old))).status_code == 200
    out = a.admin("federation", "rotate-key").stdout
    new = await current_key(a)
    assert new.key_id != old.key_id and new.key_id in out
    # the new key id is unknown to B's cache: B refreshes A's keys once and accepts
    assert (await send(b, sign_as(new))).status_code == 200
    # requests signed just before the rotation still verify within the grace period
    assert (await send(b, sign_as(old))).status_code == 200
    async with httpx.AsyncClient(timeout=30) as http:
        published = (await http.get(a.url + "/federation/v1/keys")).json()["keys"]
    by_id = {k["key_id"]: k for k in published}
    assert by_id[new.key_id]["retired_at"] is None
    assert by_id[old.key_id]["retired_at"] is not None
    # A's configuration signs with the new key from now on (the CLI reads the database)
    assert a.admin_json("federation", "ping", "b.test")["origin"] == "a.test"
    # a key id A never published is refused, even after B re-reads A's keys
    ghost = SigningKey("ed25519:00000000", new.private_key, new.public_key)
    assert_problem(await send(b, sign_as(ghost)), 401, "invalid_signature")


def well_known_fetches(server: Homeserver) -> float:
    """How often ``server`` answered ``GET /.well-known/roost`` (its own metrics)."""
    pattern = re.compile(r"^roost_http_requests_total\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE)
    return sum(
        float(value)
        for labels, value in pattern.findall(server.metrics())
        if 'route="/.well-known/roost"' in labels and 'method="GET"' in labels
    )


async def test_unknown_key_ids_cannot_make_a_server_hammer_the_origin(fed: Federation):
    a, b = fed["a.test"], fed["b.test"]
    key = await current_key(a)
    assert (await send(b, sign_as(key))).status_code == 200  # B has A's keys cached
    before = well_known_fetches(a)
    for i in range(5):
        ghost = SigningKey(f"ed25519:{i:08x}", key.private_key, key.public_key)
        assert_problem(await send(b, sign_as(ghost)), 401, "invalid_signature")
    # at most one forced refresh of A's keys per 10 s, however many unknown key ids arrive
    assert well_known_fetches(a) - before <= 1


async def test_inbound_policy_refuses_a_domain_not_admitted(fed: Federation):
    a, b = fed["a.test"], fed["b.test"]
    key = await current_key(a)
    await set_policy(b, "allowlist", allow=("c.test",))
    try:
        await asyncio.sleep(POLICY_CACHE_SECONDS + 0.5)
        assert_problem(await send(b, sign_as(key)), 403, "federation_refused")
        done = await asyncio.to_thread(a.admin, "federation", "ping", "b.test", check=False)
        assert done.returncode == 1 and "federation_refused" in done.stderr
        await set_policy(b, "open", block=("a.test",))  # the blocklist wins in open mode
        await asyncio.sleep(POLICY_CACHE_SECONDS + 0.5)
        assert_problem(await send(b, sign_as(key)), 403, "federation_refused")
    finally:
        await set_policy(b, "open")
        await asyncio.sleep(POLICY_CACHE_SECONDS + 0.5)
    assert (await send(b, sign_as(key))).status_code == 200


class ConnectionCounter:
    """A TCP listener that only counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[ConnectionCounter]:
    counter = ConnectionCounter()
    yield counter
    counter.close()


async def ping_c_from(a: Homeserver, port: int) -> None:
    """A's federation client (A's configuration and key, in-process), with c.test resolved to
    ``port``, sends ``GET /federation/v1/whoami`` to c.test."""
    env = dict(a.env)
    env["ROOST_FEDERATION_RESOLVE"] += f",c.test=127.0.0.1:{port}"
    env["ROOST_FEDERATION_INSECURE_DOMAINS"] += ",c.test"
    config = build_config({}, env)
    db = Database(config.sqlalchemy_url)
    services = build_federation(db, config)
    try:
        await services.client.json("c.test", "GET", WHOAMI)
    finally:
        await services.client.aclose()
        await db.dispose()


async def test_outbound_policy_refuses_before_sending(fed: Federation, listener):
    a = fed["a.test"]
    await set_policy(a, "open", block=("c.test",))
    try:
        with pytest.raises(FederationRefused):
            await ping_c_from(a, listener.port)
        await asyncio.sleep(0.5)
        assert listener.count == 0  # nothing left A
        # the control: admitted, the same request does connect (and finds no homeserver)
        await set_policy(a, "open")
        with pytest.raises(RemoteUnavailable):
            await ping_c_from(a, listener.port)
        assert listener.count >= 1
    finally:
        await set_policy(a, "open")


async def test_a_refusal_of_our_signature_is_a_server_error_not_the_clients(fed: Federation):
    # c.test misresolved to B: B answers 421 wrong_destination; A's client reports a 502 (a
    # caller must never hand a remote 401/421 to its own client as if the client were wrong)
    a, b = fed["a.test"], fed["b.test"]
    with pytest.raises(RemoteUnavailable) as refused:
        await ping_c_from(a, b.port)
    assert refused.value.status == 502 and refused.value.code == "federation_unavailable"
    assert "wrong_destination" in refused.value.detail


@pytest.mark.parametrize("engine", FEDERATION_ENGINES)
async def test_first_key_is_created_once_by_concurrent_starts(engine, tmp_path, request):
    if engine == "postgresql":
        url = build_config({"database_url": request.getfixturevalue("postgres_database")()})
    else:
        url = build_config({"data_dir": str(tmp_path)})
    first = Database(url.sqlalchemy_url)
    await upgrade(first)
    # separate engines stand for separate processes starting at the same moment
    dbs = [first] + [Database(url.sqlalchemy_url) for _ in range(5)]
    try:
        keys = await asyncio.gather(*(ServerIdentity(db).ensure_key() for db in dbs))
        assert len({k.key_id for k in keys}) == 1
        assert len(await ServerIdentity(first).published()) == 1
    finally:
        for db in dbs:
            await db.dispose()


def test_federation_settings_from_toml_and_environment():
    config = build_config(
        {"federation_resolve": {"B.test": "127.0.0.1:8449"}, "federation_timeout_seconds": 3},
        {
            "ROOST_FEDERATION_INSECURE_DOMAINS": "b.test, C.test",
            "ROOST_FEDERATION_SIGNATURE_WINDOW_SECONDS": "120",
        },
    )
    assert config.federation_resolve == {"b.test": "127.0.0.1:8449"}
    assert config.federation_insecure_domains == ("b.test", "c.test")
    assert config.federation_timeout_seconds == 3
    assert config.federation_signature_window_seconds == 120
    env = build_config({}, {"ROOST_FEDERATION_RESOLVE": "b.test=127.0.0.1:8449,c.test=[::1]:8450"})
    assert env.federation_resolve == {"b.test": "127.0.0.1:8449", "c.test": "[::1]:8450"}
    resolver = Resolver(config)
    assert resolver.base_url("b.test") == "http://127.0.0.1:8449"  # resolved, insecure
    assert resolver.base_url("c.test") == "http://c.test"  # insecure, not resolved
    assert resolver.base_url("d.test") == "https://d.test"  # everyone else: https only
    assert Resolver(env).base_url("B.TEST") == "https://127.0.0.1:8449"


@pytest.mark.parametrize(
    ("raw", "env", "message"),
    [
        ({"federation_resolve": {"b.test": "nohostport"}}, {}, "must be host:port"),
        ({"federation_resolve": {"not a domain": "h:1"}}, {}, "not a valid domain"),
        ({}, {"ROOST_FEDERATION_RESOLVE": "b.test"}, "federation_resolve must be a table"),
        ({"federation_insecure_domains": "b.test"}, {}, None),  # a string is a comma list
        ({"federation_insecure_domains": [1]}, {}, "must be a list of strings"),
        ({"federation_signature_window_seconds": 5}, {}, "between 30 and 3600"),
        ({"federation_timeout_seconds": 0}, {}, "at least 1"),
    ],
)
def test_bad_federation_settings_are_reported(raw, env, message):
    if message is None:
        assert build_config(raw, env).federation_insecure_domains == ("b.test",)
        return
    with pytest.raises(ConfigError, match=message):
        build_config(raw, env)


async def test_a_running_server_signs_with_a_rotated_key_without_restart(tmp_path):
    config = build_config({"data_dir": str(tmp_path)})
    server_db, cli_db = Database(config.sqlalchemy_url), Database(config.sqlalchemy_url)
    await upgrade(server_db)
    try:
        server = ServerIdentity(server_db)  # the serving process
        first = await server.ensure_key()
        assert (await server.signing_key()).key_id == first.key_id
        rotated = await ServerIdentity(cli_db).rotate()  # roost admin federation rotate-key
        await asyncio.sleep(SIGNING_KEY_CACHE_SECONDS + 0.2)
        assert (await server.signing_key()).key_id == rotated.key_id
        published = {k.key_id: k for k in await server.published()}
        assert published[first.key_id].retired_at is not None  # still published (grace)
        # after the grace period the retired key is no longer published
        late = ServerIdentity(server_db, clock=lambda: time.time() + 86400 + 10)
        assert [k.key_id for k in await late.published()] == [rotated.key_id]
    finally:
        await server_db.dispose()
        await cli_db.dispose()
