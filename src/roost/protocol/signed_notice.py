"""``SignedNotice`` (docs/api.md, "Groups", "What member queues receive"): a homeserver notice
(UTF-8 JSON) signed with the external-sender key of the group's cipher suite.

    opaque notice<V> || opaque signature<V>
    signature = SignWithLabel(key, "roost notice", notice)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from roost.mls.codec import Reader, Writer
from roost.mls.crypto.ciphersuite import CipherSuite

NOTICE_LABEL = b"roost notice"


@dataclass(frozen=True, slots=True)
class SignedNotice:
    notice: bytes  # UTF-8 JSON
    signature: bytes

    @classmethod
    def decode(cls, body: bytes) -> SignedNotice:
        r = Reader(body)
        notice, signature = r.opaque(), r.opaque()
        r.finish()
        return cls(notice, signature)

    def encode(self) -> bytes:
        w = Writer()
        w.opaque(self.notice)
        w.opaque(self.signature)
        return w.getvalue()

    def verified(self, cs: CipherSuite, server_signature_key: bytes) -> dict[str, Any]:
        """The notice JSON, once its homeserver signature checks out (else ``ValueError``)."""
        if not cs.verify_with_label(
            server_signature_key, NOTICE_LABEL, self.notice, self.signature
        ):
            raise ValueError("server notice signature does not verify")
        d = json.loads(self.notice)
        if not isinstance(d, dict) or not isinstance(d.get("type"), str):
            raise ValueError("server notice is not a JSON object with a type")
        return d


def sign_notice(cs: CipherSuite, signature_private_key: bytes, notice: dict[str, Any]) -> bytes:
    """An encoded ``SignedNotice`` of ``notice`` as canonical JSON (sorted keys, no spaces)."""
    content = json.dumps(notice, sort_keys=True, separators=(",", ":")).encode()
    signature = cs.sign_with_label(signature_private_key, NOTICE_LABEL, content)
    return SignedNotice(content, signature).encode()


def verify_notice(cs: CipherSuite, signature_key: bytes, data: bytes) -> dict[str, Any]:
    """The notice JSON of an encoded ``SignedNotice`` if the signature is valid, else
    ValueError (DecodeError when it does not decode)."""
    return SignedNotice.decode(data).verified(cs, signature_key)
