"""Every cipher suite the server offers works end to end: registration (X.509 credential for
Ed25519, Ed448 and ECDSA keys), verification by another client, KeyPackage publish and claim,
and a connection group."""

from __future__ import annotations

from roost.client import Groups, RoostClient

from .conftest import unique_name


async def test_every_offered_suite(users, server):
    info = await RoostClient.server_info(server.url)
    assert 1 in info.cipher_suites  # the baseline every server supports
    checker = await users.new("chk")
    for suite in info.cipher_suites:
        a = users.track(
            await RoostClient.register(server.url, unique_name("s"), cipher_suite=suite)
        )
        b = users.track(
            await RoostClient.register(server.url, unique_name("s"), cipher_suite=suite)
        )
        await b.publish_key_packages(2)
        v = await checker.verify_client(a.client_id, a.signature_key)
        assert v.signature_key == a.signature_key, suite
        ga = Groups(a)
        _, gid = await ga.request_connection(b.user_id)
        [kp_owner] = [m for m in ga.group(gid).roster() if m[0] == 1]
        assert kp_owner[2] == b.signature_key, suite
        # A requester b has not accepted yet gets the last-resort package while b holds no more
        # than the reserve (docs/api.md, "KeyPackages"): b's count is unchanged.
        assert (await b.key_package_count()).by_cipher_suite == {suite: 2}, suite
