"""Test-side client helpers: keys, registration, token auth, KeyPackage batches."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.key_package import KeyPackage
from roost.mls.key_package_gen import generate_key_package
from roost.mls.leaf_node import Lifetime
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.key_package_batch import join_mls_vector
from roost.protocol.message_batch import decode_message_batch
from roost.server.auth.service import AUTH_LABEL, PROOF_LABEL, auth_content, proof_content

DOMAIN = "localhost"


class FakeClock:
    """A controllable wall clock (seconds) injected into the app."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class TestClient:
    client_id: str
    client_uuid: str
    cipher_suite: int
    sig_priv: bytes
    sig_pub: bytes
    credential: list[bytes]
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def mls_credential(self) -> Credential:
        return Credential.x509(self.credential)


@dataclass
class TestUser:
    name: str
    user_id: str
    user_uuid: str
    clients: list[TestClient] = field(default_factory=list)
    password: str | None = None

    @property
    def client(self) -> TestClient:
        return self.clients[0]

    @property
    def headers(self) -> dict[str, str]:
        return self.client.headers


def new_key(user_id: str, cipher_suite: int = 1) -> tuple[bytes, bytes, dict[str, object]]:
    cs = get_cipher_suite(cipher_suite)
    priv, pub = cs.generate_signature_key_pair()
    proof = cs.sign_with_label(priv, PROOF_LABEL, proof_content(DOMAIN, user_id, pub))
    return (
        priv,
        pub,
        {"cipher_suite": cipher_suite, "signature_key": b64u(pub), "proof": b64u(proof)},
    )


def client_from(info: dict, priv: bytes, pub: bytes) -> TestClient:
    return TestClient(
        info["client_id"],
        info["client_uuid"],
        info["cipher_suite"],
        priv,
        pub,
        [unb64u(c) for c in info["credential"]],
    )


async def login(http: httpx.AsyncClient, client: TestClient) -> str:
    r = await http.post("/v1/auth/challenge", json={"client_id": client.client_id})
    assert r.status_code == 200, r.text
    ch = r.json()
    cs = get_cipher_suite(client.cipher_suite)
    sig = cs.sign_with_label(
        client.sig_priv, AUTH_LABEL, auth_content(DOMAIN, client.client_id, unb64u(ch["nonce"]))
    )
    r = await http.post(
        "/v1/auth/token", json={"challenge_id": ch["challenge_id"], "signature": b64u(sig)}
    )
    assert r.status_code == 200, r.text
    client.token = r.json()["token"]
    return client.token


async def register_user(
    http: httpx.AsyncClient,
    name: str,
    *,
    password: str | None = "correct horse battery",
    discoverable: bool = False,
    display_name: str | None = None,
    registration_token: str | None = None,
    cipher_suite: int = 1,
) -> TestUser:
    uid = f"{name}@{DOMAIN}"
    priv, pub, key = new_key(uid, cipher_suite)
    body: dict[str, object] = {"name": name, "client": key, "discoverable": discoverable}
    if password:
        body["password"] = password
    if display_name:
        body["display_name"] = display_name
    if registration_token:
        body["registration_token"] = registration_token
    r = await http.post("/v1/register", json=body)
    assert r.status_code == 201, r.text
    data = r.json()
    user = TestUser(name, data["user_id"], data["user_uuid"], password=password)
    client = client_from(data["client"], priv, pub)
    user.clients.append(client)
    await login(http, client)
    return user


async def add_client(http: httpx.AsyncClient, user: TestUser) -> TestClient:
    """Another client of ``user`` (added with the password), logged in."""
    priv, pub, key = new_key(user.user_id)
    r = await http.post(
        "/v1/clients", json={"user_id": user.user_id, "password": user.password, "client": key}
    )
    assert r.status_code == 201, r.text
    client = client_from(r.json(), priv, pub)
    user.clients.append(client)
    await login(http, client)
    return client


def kp_message(kp: KeyPackage) -> bytes:
    """MLSMessage{version mls10, wire_format mls_key_package, key_package}."""
    return (1).to_bytes(2, "big") + (5).to_bytes(2, "big") + kp.encode()


def make_kp(
    client: TestClient,
    *,
    last_resort: bool = False,
    now: float | None = None,
    lifetime: Lifetime | None = None,
    cipher_suite: int | None = None,
) -> KeyPackage:
    return generate_key_package(
        cipher_suite or client.cipher_suite,
        client.mls_credential,
        client.sig_priv,
        last_resort=last_resort,
        lifetime=lifetime,
        now=int(now if now is not None else time.time()),
    ).key_package


def batch(*kps: KeyPackage | bytes) -> bytes:
    return join_mls_vector(kp if isinstance(kp, bytes) else kp_message(kp) for kp in kps)


MLS = {"Content-Type": "message/mls"}


async def publish(http: httpx.AsyncClient, client: TestClient, body: bytes) -> httpx.Response:
    return await http.post("/v1/keypackages", content=body, headers={**client.headers, **MLS})


def split_claim(body: bytes) -> list[KeyPackage]:
    """Decode a claim answer (MLSMessage key_packages<V>)."""
    from roost.server.keypackages.validation import split_batch

    return [kp for _, kp in split_batch(body, 10_000)] if body != b"\x00" else []


def messages(body: bytes) -> list[tuple[int, bytes]]:
    return decode_message_batch(body)
