"""RFC 9421 HTTP Message Signatures and RFC 9530 ``Content-Digest``, the subset Roost uses.

One signature labelled ``roost``, algorithm ``ed25519``, over exactly the components in
``COVERED`` with the parameters ``created``, ``expires``, ``nonce``, ``keyid`` and ``alg``
(docs/federation.md, "Signed requests"). Written on ``cryptography`` rather than a library:
see docs/federation.md for why. Parsing accepts only what the contract allows (structured-field
dictionaries, RFC 8941) and raises ``SignatureError`` for anything else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from roost.protocol.base64url import b64u

from .identity import KEY_ALGORITHM, SigningKey

LABEL = "roost"
COVERED = (
    "@method",
    "@path",
    "@query",
    "content-digest",
    "roost-origin",
    "roost-destination",
)
NONCE_BYTES = 16


class SignatureError(ValueError):
    """The request's signature headers are missing, malformed or do not verify."""


@dataclass(frozen=True, slots=True)
class SignatureParams:
    components: tuple[str, ...]
    created: int
    expires: int
    nonce: str
    keyid: str
    alg: str

    def serialize(self) -> str:
        """The ``@signature-params`` value (also the ``Signature-Input`` member value)."""
        items = " ".join(f'"{c}"' for c in self.components)
        return (
            f"({items});created={self.created};expires={self.expires}"
            f';nonce="{self.nonce}";keyid="{self.keyid}";alg="{self.alg}"'
        )


@dataclass(frozen=True, slots=True)
class Target:
    """The request parts the derived components come from (as sent on the wire)."""

    method: str
    path: str  # percent-encoded path, no query
    query: str  # raw query string without "?" ("" if none)


def content_digest(body: bytes) -> str:
    """RFC 9530 ``Content-Digest`` value (sha-256) of ``body``."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


def digest_matches(header: str | None, body: bytes) -> bool:
    """Whether the ``Content-Digest`` header carries the right sha-256 of ``body``."""
    if not header:
        return False
    try:
        members = _parse_dictionary(header)
    except SignatureError:
        return False
    value = members.get("sha-256")
    if not isinstance(value, _Item) or not isinstance(value.value, bytes):
        return False
    return hmac.compare_digest(value.value, hashlib.sha256(body).digest())


def new_nonce() -> str:
    return b64u(secrets.token_bytes(NONCE_BYTES))


def signature_base(target: Target, headers: Mapping[str, str], params: SignatureParams) -> bytes:
    """The RFC 9421 signature base; ``headers`` keys must be lower-case."""
    lines = []
    for component in params.components:
        if component == "@method":
            value = target.method.upper()
        elif component == "@path":
            value = target.path or "/"
        elif component == "@query":
            value = "?" + target.query
        elif component.startswith("@"):
            raise SignatureError(f"unsupported derived component {component}")
        else:
            if component not in headers:
                raise SignatureError(f"covered header {component} is missing")
            value = headers[component].strip()
        if "\n" in value or "\r" in value:
            raise SignatureError(f"component {component} has a line break")
        lines.append(f'"{component}": {value}')
    lines.append(f'"@signature-params": {params.serialize()}')
    return "\n".join(lines).encode()


def sign(
    key: SigningKey,
    target: Target,
    headers: Mapping[str, str],
    *,
    created: int,
    window_seconds: int = 300,
    nonce: str | None = None,
) -> dict[str, str]:
    """The ``Signature-Input`` and ``Signature`` headers for a request.

    ``headers`` (lower-case names) must already hold ``content-digest``, ``roost-origin`` and
    ``roost-destination``.
    """
    params = SignatureParams(
        COVERED, created, created + window_seconds, nonce or new_nonce(), key.key_id, KEY_ALGORITHM
    )
    signature = key.private_key.sign(signature_base(target, headers, params))
    return {
        "signature-input": f"{LABEL}={params.serialize()}",
        "signature": f"{LABEL}=:{base64.b64encode(signature).decode()}:",
    }


def parse(headers: Mapping[str, str]) -> tuple[SignatureParams, bytes]:
    """The ``roost`` signature's parameters and bytes; ``SignatureError`` if malformed."""
    raw_input, raw_signature = headers.get("signature-input"), headers.get("signature")
    if not raw_input or not raw_signature:
        raise SignatureError("the request is not signed")
    member = _parse_dictionary(raw_input).get(LABEL)
    sig = _parse_dictionary(raw_signature).get(LABEL)
    if not isinstance(member, _InnerList):
        raise SignatureError(f"Signature-Input has no {LABEL} signature")
    if not isinstance(sig, _Item) or not isinstance(sig.value, bytes):
        raise SignatureError(f"Signature has no {LABEL} signature")
    components = []
    for item in member.items:
        if not isinstance(item.value, str) or item.params or item.is_token:
            raise SignatureError("covered components must be plain strings")
        components.append(item.value)
    p = member.params
    created, expires = p.get("created"), p.get("expires")
    nonce, keyid, alg = p.get("nonce"), p.get("keyid"), p.get("alg")
    if not isinstance(created, int) or not isinstance(expires, int) or isinstance(created, bool):
        raise SignatureError("created and expires must be integers")
    for name, value in (("nonce", nonce), ("keyid", keyid), ("alg", alg)):
        if not isinstance(value, str) or not value:
            raise SignatureError(f"the {name} parameter is required")
    assert isinstance(nonce, str) and isinstance(keyid, str) and isinstance(alg, str)
    if set(p) - {"created", "expires", "nonce", "keyid", "alg"}:
        raise SignatureError("unexpected signature parameters")
    if alg != KEY_ALGORITHM:
        raise SignatureError(f"algorithm must be {KEY_ALGORITHM}")
    if len(nonce) > 64 or len(keyid) > 64:
        raise SignatureError("nonce or keyid too long")
    return SignatureParams(tuple(components), created, expires, nonce, keyid, alg), sig.value


def covers_required(params: SignatureParams) -> bool:
    return set(COVERED) <= set(params.components) and len(set(params.components)) == len(
        params.components
    )


def verify(public_key: bytes, base: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, base)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- RFC 8941 structured-field dictionaries (the subset used by the two headers) ---


@dataclass(slots=True)
class _Item:
    value: object
    params: dict[str, object]
    is_token: bool = False


@dataclass(slots=True)
class _InnerList:
    items: list[_Item]
    params: dict[str, object]


_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_INTEGER = re.compile(r"-?[0-9]{1,15}")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def fail(self, what: str) -> SignatureError:
        return SignatureError(f"malformed structured field: {what}")

    def skip_sp(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        m = pattern.match(self.s, self.i)
        if m:
            self.i = m.end()
        return m

    def key(self) -> str:
        m = self.match(_KEY)
        if not m:
            raise self.fail("expected a key")
        return m.group(0)

    def bare_item(self) -> tuple[object, bool]:
        if self.i >= len(self.s):
            raise self.fail("unexpected end")
        c = self.s[self.i]
        if c == '"':
            out = []
            self.i += 1
            while self.i < len(self.s):
                ch = self.s[self.i]
                self.i += 1
                if ch == "\\":
                    if self.i >= len(self.s) or self.s[self.i] not in '"\\':
                        raise self.fail("bad escape")
                    out.append(self.s[self.i])
                    self.i += 1
                elif ch == '"':
                    return "".join(out), False
                elif not 0x20 <= ord(ch) < 0x7F:
                    raise self.fail("bad string character")
                else:
                    out.append(ch)
            raise self.fail("unterminated string")
        if c == ":":
            m = self.match(_BYTES)
            if not m:
                raise self.fail("bad byte sequence")
            try:
                return base64.b64decode(m.group(1), validate=True), False
            except binascii.Error:
                raise self.fail("bad base64") from None
        if c == "?":
            if self.s[self.i : self.i + 2] in ("?0", "?1"):
                self.i += 2
                return self.s[self.i - 1] == "1", False
            raise self.fail("bad boolean")
        m = self.match(_INTEGER)
        if m:
            if self.i < len(self.s) and self.s[self.i] == ".":
                raise self.fail("decimals are not accepted")
            return int(m.group(0)), False
        m = self.match(_TOKEN)
        if m:
            return m.group(0), True
        raise self.fail("unexpected character")

    def params(self) -> dict[str, object]:
        out: dict[str, object] = {}
        while self.i < len(self.s) and self.s[self.i] == ";":
            self.i += 1
            self.skip_sp()
            name = self.key()
            value: object = True
            if self.i < len(self.s) and self.s[self.i] == "=":
                self.i += 1
                value, _ = self.bare_item()
            if name in out:
                raise self.fail(f"duplicate parameter {name}")
            out[name] = value
        return out

    def member(self) -> _Item | _InnerList:
        if self.i < len(self.s) and self.s[self.i] == "(":
            self.i += 1
            items: list[_Item] = []
            while True:
                self.skip_sp()
                if self.i >= len(self.s):
                    raise self.fail("unterminated inner list")
                if self.s[self.i] == ")":
                    self.i += 1
                    return _InnerList(items, self.params())
                value, is_token = self.bare_item()
                items.append(_Item(value, self.params(), is_token))
                if self.i < len(self.s) and self.s[self.i] not in " )":
                    raise self.fail("bad inner list separator")
        value, is_token = self.bare_item()
        return _Item(value, self.params(), is_token)


def _parse_dictionary(text: str) -> dict[str, _Item | _InnerList]:
    if len(text) > 8192:
        raise SignatureError("header too long")
    p = _Parser(text.strip())
    out: dict[str, _Item | _InnerList] = {}
    while p.i < len(p.s):
        name = p.key()
        if p.i < len(p.s) and p.s[p.i] == "=":
            p.i += 1
            out[name] = p.member()
        else:
            out[name] = _Item(True, p.params())
        p.skip_sp()
        if p.i >= len(p.s):
            break
        if p.s[p.i] != ",":
            raise p.fail("expected a comma")
        p.i += 1
        p.skip_sp()
        if p.i >= len(p.s):
            raise p.fail("trailing comma")
    return out
