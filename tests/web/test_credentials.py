"""The page checks every member's x509 credential against the AS certificate of its domain.

A ``roost.client`` peer builds, with Roost's own MLS and x509 code, a group whose other
member (itself) carries a credential the page must not accept, and invites the page's user
to it. The Welcome is encrypted for the invitee, so the homeserver (which checks the leaves
it sees) cannot stop it: only the page can. A commit adding such a member the homeserver
would refuse, so the last test has the page's socket deliver one in place of a message the
DS accepted, as a dishonest server could.
"""

from __future__ import annotations

import os

import pytest

from roost.client import RoostClient
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.extension_types import ExternalSender, ExternalSenders
from roost.mls.group import Group
from roost.mls.key_package_gen import generate_key_package
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.media_types import MLS_MEDIA_TYPE
from roost.server.auth.ca import CertificateAuthority
from tests.e2e.helpers import sync_until

from .conftest import PASSWORD, python_user, signed_up, unique

SUITE = 1


def forged(client: RoostClient, kind: str) -> tuple[Credential, bytes]:
    """A credential and signature key the page must refuse, for ``client``'s leaf."""
    st = client.state
    key = get_cipher_suite(SUITE).signature_public_key(st.signature_private)
    if kind == "forged":  # our own client id, issued by an AS that is not localhost's
        fake = CertificateAuthority.generate("localhost")
        leaf = fake.issue_client_certificate(st.client_id, SUITE, key, 30)
        return Credential.x509([leaf, fake.certificate_der]), st.signature_private
    if kind == "other-domain":  # a client of a domain whose AS the page cannot fetch
        other = CertificateAuthority.generate("elsewhere.test")
        client_id = f"{st.client_id.split('@')[0]}@elsewhere.test/{st.client_id.rsplit('/')[1]}"
        leaf = other.issue_client_certificate(client_id, SUITE, key, 30)
        return Credential.x509([leaf, other.certificate_der]), st.signature_private
    # the genuine certificate, but another signature key in the leaf
    other_private, _ = get_cipher_suite(SUITE).generate_signature_key_pair()
    return client.credential, other_private


async def forged_welcome(client: RoostClient, kind: str, group_id: bytes, key_packages) -> bytes:
    """The Welcome to a group of the same id where our leaf carries a refused credential."""
    server = (await client.request("GET", "/v1/ds/external-sender")).json()
    ext = ExternalSenders((ExternalSender.decode(unb64u(server["external_sender"])),))
    credential, private = forged(client, kind)
    group = Group.create(
        SUITE, credential, private, group_id=group_id, extensions=[ext.to_extension()]
    )
    welcome = group.commit(add=key_packages).welcome
    assert welcome is not None
    return welcome


KINDS = ["forged", "other-domain", "wrong-key"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_request_with_a_refused_credential_is_not_joined(
    web_server, browser, kind
):
    url = web_server.url
    mallory = await RoostClient.register(url, unique("mallory"))
    try:
        dave = signed_up(browser, "dave", url, "web")
        browser.call("text", name="dave", selector="#status", wait_for="Online")

        conn = await mallory.open_connection(f"{dave}@localhost")
        kps = await mallory.claim_key_packages(f"{dave}@localhost")
        gid = f"{b64u(os.urandom(16))}@localhost".encode()
        welcome = await forged_welcome(mallory, kind, gid, kps)
        await mallory.send_connection_request(conn.connection_id, welcome)

        browser.call("invitations", name="dave", wait_for=mallory.state.user_id)
        got = browser.call("accept", name="dave", **{"from": mallory.state.user_id})
        assert "was refused" in (got["error"] or ""), got
        # Nothing changed: the invitation is still there, the connection still unanswered.
        assert browser.call("invitations", name="dave") == [
            f"{mallory.state.user_id} wants to start a conversation"
        ]
        assert browser.call("text", name="dave", selector="#conversations") == ""
        [c] = [c for c in await mallory.connections() if c.connection_id == conn.connection_id]
        assert c.state == "pending"
    finally:
        await mallory.aclose()


async def test_an_add_with_a_refused_credential_is_not_joined(web_server, browser):
    """A connected peer adds the page's user to a group through the DS: the commit is
    genuine, the Welcome (which the DS cannot read) is for a group where the peer's leaf
    carries a forged credential."""
    url = web_server.url
    mallory = await python_user(url, "mallory", key_packages=2)
    try:
        dave = signed_up(browser, "dave", url, "web")
        browser.call("text", name="dave", selector="#status", wait_for="Online")
        who = mallory.client.state.user_id
        browser.call("start", name="dave", peer=who)
        [conn] = [c for c in await mallory.client.connections() if c.state == "pending"]
        await mallory.groups.accept_connection(conn.connection_id)

        group = await mallory.groups.create()
        kps = await mallory.client.claim_key_packages(f"{dave}@localhost")
        out = group.commit(add=kps)
        welcome = await forged_welcome(mallory.client, "forged", group.group_id, kps)
        await mallory.client.request(
            "POST",
            f"/v1/groups/{b64u(group.group_id)}/commits",
            content=encode_commit_bundle(out.commit, out.group_info, welcome),
            content_type=MLS_MEDIA_TYPE,
            headers=mallory.groups.key_headers(group.group_id),  # the group is sealed
        )
        text = browser.call("text", name="dave", selector="#refusals", wait_for="was refused")
        assert f"An invitation from {who} was refused." in text
        assert f"Group with {who}" not in browser.call(
            "text", name="dave", selector="#conversations"
        )
    finally:
        await mallory.client.aclose()


def padded_to(group: Group, length: int) -> bytes:
    """An application message of exactly ``length`` bytes (its padding chosen to fit)."""
    padding = 0
    for _ in range(4):
        message = group.encrypt(b"stand-in", padding=padding)
        if len(message) == length:
            return message
        padding += length - len(message)
    raise AssertionError("no padding fits")


async def test_a_commit_adding_a_refused_credential_changes_nothing(web_server, browser):
    url = web_server.url
    mallory = await python_user(url, "mallory", key_packages=2)
    try:
        dave = unique("web")
        who = mallory.client.state.user_id
        browser.open("dave", url)
        browser.call("swap_frames", name="dave")
        assert browser.sign_in("dave", dave, PASSWORD, register=True)["error"] is None
        browser.call("text", name="dave", selector="#status", wait_for="Online")
        _, gid = await mallory.groups.request_connection(f"{dave}@localhost")
        browser.call("invitations", name="dave", wait_for=who)
        assert browser.call("accept", name="dave", **{"from": who}) == {"error": None}
        await sync_until(mallory, lambda e: e.kind == "connected")

        # A KeyPackage of "carol" whose certificate a forged localhost AS issued.
        cs = get_cipher_suite(SUITE)
        private, public = cs.generate_signature_key_pair()
        fake = CertificateAuthority.generate("localhost")
        carol = f"carol@localhost/{os.urandom(16).hex()}"
        leaf = fake.issue_client_certificate(carol, SUITE, public, 30)
        credential = Credential.x509([leaf, fake.certificate_der])
        kp = generate_key_package(SUITE, credential, private).key_package
        group = mallory.groups.group(gid)
        policy, group.credential_policy = group.credential_policy, None  # ours would refuse it
        commit = group.commit(add=[kp]).commit
        group.clear_pending_commit()
        group.credential_policy = policy

        stand_in = padded_to(group, len(commit))
        browser.call("swap", name="dave", find=stand_in.hex(), replace=commit.hex())
        await mallory.groups.send_raw(gid, stand_in)
        [line] = browser.call("notices", name="dave", wait_for="was refused")
        assert line.startswith(f"A message was refused. The credential of {carol} was refused:")

        # The group state did not move: the next message of the epoch reads as before.
        await mallory.groups.send(gid, "still the same group")
        got = browser.call("messages", name="dave", wait_for="still the same group")
        assert [m["text"] for m in got] == ["still the same group"]
    finally:
        await mallory.client.aclose()
