"""Unit tests of the RFC 9421 / RFC 9530 subset in roost.server.federation.signing."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from roost.server.federation import signing
from roost.server.federation.identity import SigningKey

CREATED = 1_700_000_000


def make_key(key_id: str = "ed25519:0a1b2c3d") -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(
        key_id, private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def signed(key: SigningKey, body: bytes = b'{"x":1}', **kw):
    target = signing.Target("POST", "/federation/v1/inbox", "a=1&b=%20")
    headers = {
        "content-digest": signing.content_digest(body),
        "roost-origin": "a.test",
        "roost-destination": "b.test",
        "content-type": "application/json",
    }
    headers.update(
        signing.sign(key, target, headers, created=CREATED, nonce="bm9uY2Vub25jZW5vbmNl", **kw)
    )
    return target, headers, body


def verifies(key: SigningKey, target: signing.Target, headers: dict[str, str]) -> bool:
    params, sig = signing.parse(headers)
    return signing.verify(key.public_key, signing.signature_base(target, headers, params), sig)


def test_content_digest_matches_rfc_9530_example():
    # RFC 9530 section 2: {"hello": "world"}
    body = b'{"hello": "world"}'
    assert signing.content_digest(body) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    assert signing.digest_matches(signing.content_digest(body), body)
    assert not signing.digest_matches(signing.content_digest(body), body + b" ")
    assert not signing.digest_matches(None, body)
    assert not signing.digest_matches("sha-512=:AAAA:", body)  # only sha-256 counts
    assert not signing.digest_matches("sha-256=:not base64!:", body)
    # several algorithms may be listed; the sha-256 member is the one checked
    both = "sha-512=:AAAA:, " + signing.content_digest(body)
    assert signing.digest_matches(both, body)


def test_rfc_9421_ed25519_example_verifies():
    # RFC 9421 appendix B.2.6 (test-key-ed25519): our parser reads its headers and our
    # verification accepts its signature over the base given there.
    private = load_pem_private_key(
        b"-----BEGIN PRIVATE KEY-----\n"
        b"MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n"
        b"-----END PRIVATE KEY-----\n",
        None,
    )
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sig_input = (
        'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"'
    )
    sig_header = (
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPp"
        "BKRCw==:"
    )
    member = signing._parse_dictionary(sig_input)["sig-b26"]
    signature = signing._parse_dictionary(sig_header)["sig-b26"].value
    assert [i.value for i in member.items][:3] == ["date", "@method", "@path"]
    assert member.params == {"created": 1618884473, "keyid": "test-key-ed25519"}
    base = (
        '"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@method": POST\n"@path": /foo\n'
        '"@authority": example.com\n"content-type": application/json\n"content-length": 18\n'
        '"@signature-params": ' + sig_input.split("=", 1)[1]
    ).encode()
    assert signing.verify(public, base, signature)
    assert not signing.verify(public, base.replace(b"/foo", b"/fop"), signature)


def test_signature_base_has_the_documented_shape():
    key = make_key()
    target, headers, _ = signed(key)
    params, _ = signing.parse(headers)
    assert signing.signature_base(target, headers, params).decode() == (
        '"@method": POST\n'
        '"@path": /federation/v1/inbox\n'
        '"@query": ?a=1&b=%20\n'
        f'"content-digest": {headers["content-digest"]}\n'
        '"roost-origin": a.test\n'
        '"roost-destination": b.test\n'
        '"@signature-params": ("@method" "@path" "@query" "content-digest" "roost-origin" '
        f'"roost-destination");created={CREATED};expires={CREATED + 300}'
        ';nonce="bm9uY2Vub25jZW5vbmNl";keyid="ed25519:0a1b2c3d";alg="ed25519"'
    )
    assert headers["signature-input"].startswith('roost=("@method" "@path" "@query"')
    assert signing.covers_required(params)


def test_empty_query_is_a_lone_question_mark():
    key = make_key()
    headers = {
        "content-digest": signing.content_digest(b""),
        "roost-origin": "a.test",
        "roost-destination": "b.test",
    }
    target = signing.Target("GET", "/federation/v1/keys", "")
    headers.update(signing.sign(key, target, headers, created=CREATED))
    params, _ = signing.parse(headers)
    assert b'"@query": ?\n' in signing.signature_base(target, headers, params)
    assert verifies(key, target, headers)


def test_round_trip_and_every_tampered_component_fails():
    key = make_key()
    target, headers, body = signed(key)
    assert verifies(key, target, headers)
    assert not verifies(make_key(), target, headers)  # another key
    for changed in (
        signing.Target("PUT", target.path, target.query),
        signing.Target(target.method, "/federation/v1/inboy", target.query),
        signing.Target(target.method, target.path, "a=2&b=%20"),
    ):
        assert not verifies(key, changed, headers)
    for name, value in (
        ("roost-origin", "c.test"),
        ("roost-destination", "c.test"),
        ("content-digest", signing.content_digest(b"other")),
    ):
        assert not verifies(key, target, {**headers, name: value})
    # a header outside the covered set may change (it is not signed)
    assert verifies(key, target, {**headers, "content-type": "text/plain"})


def test_signature_bytes_tampered():
    key = make_key()
    target, headers, _ = signed(key)
    _, sig = signing.parse(headers)
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    bad = {**headers, "signature": f"roost=:{base64.b64encode(flipped).decode()}:"}
    assert not verifies(key, target, bad)


@pytest.mark.parametrize(
    "change",
    [
        {"signature-input": None},
        {"signature": None},
        {"signature-input": "roost=garbage("},
        {"signature": "roost=notbytes"},
        {"signature": "other=:AAAA:"},
        {"signature-input": 'roost=("@method");created=1;expires=2;keyid="k";alg="ed25519"'},
        {"signature-input": 'roost=("@method");created=1;expires=2;nonce="n";keyid="k";alg="rsa"'},
        {
            "signature-input": 'roost=("@method");created=x;expires=2;nonce="n";keyid="k";alg="ed25519"'
        },
        {
            "signature-input": 'roost=("@method");created=1;expires=2;nonce="n";keyid="k";alg="ed25519";tag="t"'
        },
        {
            "signature-input": 'roost=(@method);created=1;expires=2;nonce="n";keyid="k";alg="ed25519"'
        },
        {
            "signature-input": 'roost=("@method");created=1.5;expires=2;nonce="n";keyid="k";alg="ed25519"'
        },
    ],
)
def test_malformed_or_incomplete_signatures_are_refused(change):
    key = make_key()
    _, headers, _ = signed(key)
    for name, value in change.items():
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value
    with pytest.raises(signing.SignatureError):
        signing.parse(headers)


def test_covered_set_must_be_complete_and_without_duplicates():
    for components in (
        signing.COVERED[:-1],
        (*signing.COVERED, "@method"),
        ("@method", "@path", "@query", "content-digest", "roost-origin"),
    ):
        params = signing.SignatureParams(tuple(components), 1, 2, "n", "k", "ed25519")
        assert not signing.covers_required(params)


def test_other_signatures_beside_ours_are_ignored():
    key = make_key()
    target, headers, _ = signed(key)
    headers["signature-input"] = 'proxy=("@method");created=1, ' + headers["signature-input"]
    headers["signature"] = "proxy=:AAAA:, " + headers["signature"]
    assert verifies(key, target, headers)


def test_missing_covered_header_is_an_error_not_an_empty_value():
    key = make_key()
    target, headers, _ = signed(key)
    params, _ = signing.parse(headers)
    del headers["roost-destination"]
    with pytest.raises(signing.SignatureError):
        signing.signature_base(target, headers, params)


def test_nonces_are_random_and_16_bytes():
    nonces = {signing.new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(base64.urlsafe_b64decode(n + "==")) == 16 for n in nonces)
