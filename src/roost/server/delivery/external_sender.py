"""The homeserver as every group's external sender (RFC 9420 §12.1.8.1 external_senders): its
key per cipher suite, its index in a group's extension, and the notices it signs."""

from __future__ import annotations

from roost.mls.constants import ExtensionType
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import DecodeError, UnsupportedError
from roost.mls.extension_types import ExternalSenders
from roost.mls.extensions import find_extension
from roost.mls.group import GroupObserver
from roost.protocol.signed_notice import sign_notice

from ..errors import Problem
from .keys import ServerKey, ServerKeys


class ExternalSender:
    def __init__(self, keys: ServerKeys) -> None:
        self.keys = keys

    async def key(self, cipher_suite: int) -> ServerKey:
        try:
            return await self.keys.get(cipher_suite)
        except UnsupportedError:
            raise Problem(422, "unsupported_cipher_suite", "cipher suite not supported") from None

    async def index_in(self, obs: GroupObserver) -> tuple[ServerKey, int] | None:
        """Our key and our index in the group's external_senders, if it lists us."""
        key = await self.key(obs.group_context.cipher_suite)
        ext = find_extension(obs.group_context.extensions, ExtensionType.EXTERNAL_SENDERS)
        if ext is None:
            return None
        try:
            senders = ExternalSenders.from_extension(ext).senders
        except DecodeError:
            return None
        for i, s in enumerate(senders):
            if s.signature_key == key.public_key:
                return key, i
        return None

    async def require_in(self, obs: GroupObserver) -> tuple[ServerKey, int]:
        found = await self.index_in(obs)
        if found is None:
            raise Problem(
                422,
                "missing_external_sender",
                "the group's external_senders extension must list the homeserver "
                "(GET /v1/ds/external-sender)",
            )
        return found

    async def signed_notice(self, cipher_suite: int, notice: dict[str, object]) -> bytes:
        key = await self.key(cipher_suite)
        return sign_notice(get_cipher_suite(cipher_suite), key.private_key, notice)
