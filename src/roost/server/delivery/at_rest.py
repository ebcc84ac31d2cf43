"""Who is in a group, sealed at rest: the DS stores no readable link between a user or client
and a group (docs/privacy.md, "The Delivery Service's state").

- A member row keeps its leaf index, whether it is gone and its join order in the clear (what
  ordering and fan-out bookkeeping need); its client, user, queue reference and push policy are
  one AES-256-GCM seal bound to (group, leaf).
- A role row is found by ``user_ref``, an HMAC of (group, user): equal for one user within one
  group, unrelated across groups; the user's id itself is sealed beside it.
- The group's MLS state (the observer's tree, whose credentials name every member) and its
  latest GroupInfo are sealed bound to the group.

For a group made with a group key, every seal and reference is made under keys derived from the
group key and the server's seal key file together (``group_keyring.py``): the DS opens them only
while it holds the group key, learnt from a member's request; the operator, who holds the file,
cannot. A group made without a key (and a keyed group's rows until the DS first sees its key,
``GroupStore.require_key``) uses keys derived from the file alone, outside the database: a copy
of the database cannot open them; the operator can.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from hashlib import sha256

from roost.protocol.base64url import b64u, unb64u

from ..seal import Seal
from ..seal_key import SealKeyFile
from .group_keyring import STATE_SEAL_LABEL, GroupKeyring, GroupSecrets

USER_REF_BYTES = 32


class SealBroken(Exception):
    """A seal that does not open: a keyed group whose key this process does not hold, another
    key file, or damage."""


@dataclass(frozen=True, slots=True)
class MemberIds:
    """What a member row seals: who the leaf is and where its items go."""

    client_uuid: str
    user_id: str
    queue_id: bytes | None
    queue_domain: str | None
    policy: str | None


# The group this task writes under a key not held yet (``AtRest.sealing_under``): other tasks
# keep to what the process holds until that transaction committed.
_WRITING_UNDER: ContextVar[tuple[bytes, GroupSecrets] | None] = ContextVar(
    "writing_under", default=None
)


class AtRest:
    def __init__(self, key_file: SealKeyFile, keyring: GroupKeyring | None = None) -> None:
        """``keyring``: the group keys held (none: only what the file alone opens)."""
        self._seal = Seal(key_file, STATE_SEAL_LABEL)
        self._key_file = key_file
        self.keyring = keyring or GroupKeyring(key_file)
        self._ref_key: bytes | None = None  # derived on first use: start-up reads no file

    def held(self, group_id: bytes) -> GroupSecrets | None:
        """The group's key, if this process holds it (or this task writes the group under it)."""
        writing = _WRITING_UNDER.get()
        if writing is not None and writing[0] == group_id:
            return writing[1]
        return self.keyring.get(group_id)

    @contextlib.contextmanager
    def sealing_under(self, group_id: bytes, secrets_: GroupSecrets | None) -> Iterator[None]:
        """Within the block (this task only), seal and reference the group under ``secrets_``
        (None: as outside it), before the process holds them: for a transaction that writes a
        group under a key other tasks must not use until it committed."""
        if secrets_ is None:
            yield
            return
        token = _WRITING_UNDER.set((group_id, secrets_))
        try:
            yield
        finally:
            _WRITING_UNDER.reset(token)

    def _sealed(self, group_id: bytes, plaintext: bytes, bound_to: bytes) -> bytes:
        held = self.held(group_id)
        return (self._seal if held is None else held.state_seal).seal_bytes(plaintext, bound_to)

    def _open(self, group_id: bytes, sealed: bytes, bound_to: bytes) -> bytes:
        held = self.held(group_id)
        # A keyed group's rows sealed before the DS first saw its key open with the file's.
        raw = None if held is None else held.state_seal.open_bytes(sealed, bound_to)
        if raw is None:
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
        return self._sealed(group_id, raw, _member_aad(group_id, leaf_index))

    def open_member(self, group_id: bytes, leaf_index: int, sealed: bytes) -> MemberIds:
        client_uuid, user_id, queue_id, queue_domain, policy = json.loads(
            self._open(group_id, sealed, _member_aad(group_id, leaf_index))
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
        held = self.held(group_id)
        if held is not None:
            ref_key = held.ref_key
        else:
            if self._ref_key is None:
                self._ref_key = self._key_file.derive(b"roost ds user ref v1")
            ref_key = self._ref_key
        msg = len(group_id).to_bytes(2, "big") + group_id + user_id.encode()
        return hmac.new(ref_key, msg, sha256).digest()

    def seal_user(self, group_id: bytes, user_id: str) -> bytes:
        return self._sealed(group_id, user_id.encode(), b"role|" + group_id)

    def open_user(self, group_id: bytes, sealed: bytes) -> str:
        return self._open(group_id, sealed, b"role|" + group_id).decode()

    # ---- the group's MLS state and GroupInfo -------------------------------------------------

    def seal_state(self, group_id: bytes, state: bytes) -> bytes:
        return self._sealed(group_id, state, b"state|" + group_id)

    def open_state(self, group_id: bytes, sealed: bytes) -> bytes:
        return self._open(group_id, sealed, b"state|" + group_id)

    def seal_group_info(self, group_id: bytes, group_info: bytes) -> bytes:
        return self._sealed(group_id, group_info, b"group_info|" + group_id)

    def open_group_info(self, group_id: bytes, sealed: bytes) -> bytes:
        return self._open(group_id, sealed, b"group_info|" + group_id)


def _member_aad(group_id: bytes, leaf_index: int) -> bytes:
    return b"member|" + leaf_index.to_bytes(4, "big") + group_id
