"""KeyPackages (docs/api.md, "KeyPackages"): generating and publishing this client's batch
(keeping the private keys until they expire), counting, and claiming another user's packages
with each one verified against that user's AS."""

from __future__ import annotations

import time
from dataclasses import replace

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import MLSError
from roost.mls.key_package import KeyPackage
from roost.mls.leaf_node import Lifetime
from roost.protocol.key_package_batch import decode_key_package_batch, encode_key_package_batch
from roost.protocol.media_types import MLS_MEDIA_TYPE
from roost.protocol.user_id import canonical_user_id

from .credential_policy import CredentialChecks
from .credentials import certificate_client_ids, verify_chain, verify_client_credential
from .errors import CredentialError, RoostError
from .group_name import roost_capabilities
from .models import KeyPackageCount, PublishResult
from .session import segment, user_path
from .state import KeyPackageSecrets


class KeyPackagesApi(CredentialChecks):
    def generate_key_packages(
        self,
        count: int,
        *,
        last_resort: int = 1,
        lifetime_seconds: int | None = None,
    ) -> tuple[list[KeyPackage], dict[str, KeyPackageSecrets]]:
        """Fresh KeyPackages (the last ``last_resort`` of them marked last-resort) and secrets."""
        from roost.mls.key_package_gen import generate_key_package  # heavy: import on use

        cs = self.cs
        credential = self.credential
        lifetime = None
        if lifetime_seconds is not None:
            now = int(time.time())
            lifetime = Lifetime(now - 60, now + lifetime_seconds)
        kps: list[KeyPackage] = []
        secrets: dict[str, KeyPackageSecrets] = {}
        for i in range(count):
            bundle = generate_key_package(
                self.state.cipher_suite,
                credential,
                self.state.signature_private,
                lifetime=lifetime,
                capabilities=roost_capabilities(self.state.cipher_suite),
                last_resort=i >= count - last_resort,
            )
            kp = bundle.key_package
            ref = cs.key_package_ref(kp.encode()).hex()
            lt = kp.leaf_node.lifetime
            secrets[ref] = KeyPackageSecrets(
                bundle.init_private_key,
                bundle.encryption_private_key,
                i >= count - last_resort,
                lt.not_after if lt is not None else 0,
                kp.encode(),
            )
            kps.append(kp)
        return kps, secrets

    async def publish_key_packages(
        self, count: int = 10, *, last_resort: int = 1, lifetime_seconds: int | None = None
    ) -> PublishResult:
        """Generate and publish a batch (it replaces the earlier batch on the server)."""
        kps, secrets = self.generate_key_packages(
            count, last_resort=last_resort, lifetime_seconds=lifetime_seconds
        )
        result = await self.publish_raw_key_packages(encode_key_package_batch(kps))
        # Keep older secrets until they expire: a package claimed earlier may still
        # arrive in a Welcome.
        now = time.time()
        kept = {r: s for r, s in self.state.keypackages.items() if s.not_after > now}
        kept.update(secrets)
        self.state.keypackages = kept
        self.save()
        return replace(result, refs=tuple(bytes.fromhex(r) for r in secrets))

    async def publish_raw_key_packages(self, body: bytes) -> PublishResult:
        """Publish an already-encoded ``MLSMessage key_packages<V>`` body as is."""
        d = (
            await self.request("POST", "/v1/keypackages", content=body, content_type=MLS_MEDIA_TYPE)
        ).json()
        return PublishResult(int(d["published"]), int(d.get("last_resort", 0)))

    async def key_package_count(self) -> KeyPackageCount:
        return KeyPackageCount.from_json(
            (await self.request("GET", "/v1/keypackages/count")).json()
        )

    async def _claim(self, path: str, suite: int) -> list[KeyPackage]:
        """A claim route's answer: the MLS vector of the KeyPackages given out."""
        resp = await self.request("POST", path, params={"cipher_suite": suite})
        try:
            return decode_key_package_batch(resp.content)
        except MLSError as e:
            raise RoostError(0, "malformed_server_answer", f"claim answer: {e}") from e

    async def claim_key_packages(
        self, user_id: str, *, cipher_suite: int | None = None, verify: bool = True
    ) -> list[KeyPackage]:
        """One KeyPackage per client of ``user_id``. With ``verify`` each one is checked:
        MLS validity (signatures, lifetime, suite) and an x509 credential issued by the
        user's AS for a client of that user."""
        suite = cipher_suite or self.state.cipher_suite
        kps = await self._claim(f"/v1/users/{user_path(user_id)}/keypackages/claim", suite)
        if verify:
            for kp in kps:
                await self.verify_key_package(kp, user_id=user_id, cipher_suite=suite)
        return kps

    async def claim_client_key_package(
        self,
        user_id: str,
        client_uuid: str,
        *,
        cipher_suite: int | None = None,
        verify: bool = True,
    ) -> KeyPackage | None:
        """One KeyPackage of one client of ``user_id`` (``None`` when it has none for the
        suite). With ``verify`` it is checked as by ``claim_key_packages`` and must be that
        client's."""
        suite = cipher_suite or self.state.cipher_suite
        kps = await self._claim(
            f"/v1/users/{user_path(user_id)}/clients/{segment(client_uuid)}/keypackages/claim",
            suite,
        )
        if len(kps) > 1:
            raise RoostError(0, "malformed_server_answer", "claim answer: more than one package")
        if not kps:
            return None
        if verify:
            owner = await self.verify_key_package(kps[0], user_id=user_id, cipher_suite=suite)
            if owner.rpartition("/")[2] != client_uuid.lower():
                raise CredentialError(f"the claimed KeyPackage is {owner}'s, not the client's")
        return kps[0]

    async def verify_key_package(
        self, kp: KeyPackage, *, user_id: str, cipher_suite: int | None = None
    ) -> str:
        """Validate a KeyPackage of one of ``user_id``'s clients; return that client id."""
        from roost.mls.group.validation import validate_key_package  # heavy: import on use

        suite = cipher_suite or kp.cipher_suite
        user_id = canonical_user_id(user_id)
        cred = kp.leaf_node.credential
        if cred.credential_type != 2 or not cred.certificates:
            raise CredentialError("KeyPackage credential is not x509")
        domain = user_id.rpartition("@")[2]
        as_cert = await self.as_certificate(domain)
        leaf = verify_chain(list(cred.certificates), as_cert)
        client_ids = [c for c in certificate_client_ids(leaf) if c.startswith(user_id + "/")]
        if not client_ids:
            raise CredentialError(f"KeyPackage credential names no client of {user_id}")
        client_id = client_ids[0]

        def policy(credential: Credential, signature_key: bytes) -> bool:
            verify_client_credential(
                list(credential.certificates),
                as_cert,
                client_id=client_id,
                signature_key=signature_key,
            )
            return True

        try:
            validate_key_package(
                get_cipher_suite(suite),
                kp,
                cipher_suite=suite,
                group_id=b"",
                group_extensions=(),
                members=(),
                credential_policy=policy,
            )
        except MLSError as e:
            raise CredentialError(f"invalid KeyPackage from {client_id}: {e}") from e
        return client_id
