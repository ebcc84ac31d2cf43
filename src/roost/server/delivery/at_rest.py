"""Who is in a group, sealed at rest: the DS stores no readable link between a user or client
and a group (docs/privacy.md, "The Delivery Service's state").

- A member row keeps its leaf index, whether it is gone and its join order in the clear (what
  ordering and fan-out bookkeeping need); its client, user, queue reference and push policy are
  one AES-256-GCM seal bound to (group, leaf).
- A role row is found by ``user_ref``, an HMAC of (group, user): equal for one user within one
  group, unrelated across groups; the user's id itself is sealed beside it.
- The group's MLS state (the observer's tree, whose credentials name every member) and its
  latest GroupInfo are sealed bound to the group.

The keys derive from the server's seal key file (``seal_key.py``), outside the database: a copy
of the database cannot open any of it; the operator, who holds the file, can.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from hashlib import sha256

from roost.protocol.base64url import b64u, unb64u

from ..seal import Seal
from ..seal_key import SealKeyFile

USER_REF_BYTES = 32


class SealBroken(Exception):
    """A seal that does not open under this server's key (another key file, or damage)."""


@dataclass(frozen=True, slots=True)
class MemberIds:
    """What a member row seals: who the leaf is and where its items go."""

    client_uuid: str
    user_id: str
    queue_id: bytes | None
    queue_domain: str | None
    policy: str | None


class AtRest:
    def __init__(self, key_file: SealKeyFile) -> None:
        self._seal = Seal(key_file, b"roost ds state seal v1")
        self._key_file = key_file
        self._ref_key: bytes | None = None  # derived on first use: start-up reads no file

    def _sealed(self, plaintext: bytes, bound_to: bytes) -> bytes:
        return self._seal.seal_bytes(plaintext, bound_to)

    def _open(self, sealed: bytes, bound_to: bytes) -> bytes:
        raw = self._seal.open_bytes(sealed, bound_to)
        if raw is None:
            raise SealBroken
        return raw

    # ---- member rows ------------------------------------------------------------------------

    def seal_member(self, group_id: bytes, leaf_index: int, ids: MemberIds) -> bytes:
        doc = [
            ids.client_uuid,
            ids.user_id,
            None if ids.queue_id is None else b64u(ids.queue_id),
            ids.queue_domain,
            ids.policy,
        ]
        raw = json.dumps(doc, separators=(",", ":")).encode()
        return self._sealed(raw, _member_aad(group_id, leaf_index))

    def open_member(self, group_id: bytes, leaf_index: int, sealed: bytes) -> MemberIds:
        client_uuid, user_id, queue_id, queue_domain, policy = json.loads(
            self._open(sealed, _member_aad(group_id, leaf_index))
        )
        return MemberIds(
            client_uuid,
            user_id,
            None if queue_id is None else unb64u(queue_id),
            queue_domain,
            policy,
        )

    # ---- role rows --------------------------------------------------------------------------

    def user_ref(self, group_id: bytes, user_id: str) -> bytes:
        if self._ref_key is None:
            self._ref_key = self._key_file.derive(b"roost ds user ref v1")
        msg = len(group_id).to_bytes(2, "big") + group_id + user_id.encode()
        return hmac.new(self._ref_key, msg, sha256).digest()

    def seal_user(self, group_id: bytes, user_id: str) -> bytes:
        return self._sealed(user_id.encode(), b"role|" + group_id)

    def open_user(self, group_id: bytes, sealed: bytes) -> str:
        return self._open(sealed, b"role|" + group_id).decode()

    # ---- the group's MLS state and GroupInfo -------------------------------------------------

    def seal_state(self, group_id: bytes, state: bytes) -> bytes:
        return self._sealed(state, b"state|" + group_id)

    def open_state(self, group_id: bytes, sealed: bytes) -> bytes:
        return self._open(sealed, b"state|" + group_id)

    def seal_group_info(self, group_id: bytes, group_info: bytes) -> bytes:
        return self._sealed(group_info, b"group_info|" + group_id)

    def open_group_info(self, group_id: bytes, sealed: bytes) -> bytes:
        return self._open(sealed, b"group_info|" + group_id)


def _member_aad(group_id: bytes, leaf_index: int) -> bytes:
    return b"member|" + leaf_index.to_bytes(4, "big") + group_id
