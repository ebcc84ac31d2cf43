"""Fetching assets held by other domains, for this server's users (docs/federation.md,
"Assets"): one signed ``GET /federation/v1/assets/{asset_id}`` through the federation client
(policy, signing, pinned addresses), its ciphertext relayed as it arrives.

Never buffered: the answer streams through in the remote's chunks, its declared length must be
within this server's own asset cap, it is cut off at that length or at the relay timeout, and
a short answer is an error (the client then sees a broken transfer, not a short blob).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from ..assets.routes import ASSET_MEDIA_TYPE, CAPABILITY_HEADER
from ..assets.storage import Blob
from .identity import FEDERATION_API
from .transport import FederationClient, RemoteUnavailable

if TYPE_CHECKING:  # at run time httpx loads with the first request (outbound_client.py)
    import httpx

ASSET_PATH = FEDERATION_API + "/assets/{asset_id}"


class RemoteAssets:
    """``assets.remote.RemoteAssetSource`` over the federation client."""

    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def open(
        self, domain: str, asset_id: str, capability: str, *, max_bytes: int, timeout: float
    ) -> Blob:
        deadline = asyncio.get_running_loop().time() + timeout  # for the whole download
        path = ASSET_PATH.format(asset_id=asset_id)
        stack = AsyncExitStack()
        try:
            async with asyncio.timeout_at(deadline):
                response = await stack.enter_async_context(
                    self.client.stream(domain, "GET", path, headers={CAPABILITY_HEADER: capability})
                )
            size = _declared_size(domain, response, max_bytes)
        except TimeoutError:
            await stack.aclose()
            raise RemoteUnavailable(domain, "timed out") from None
        except BaseException:
            await stack.aclose()
            raise
        chunks = _relay(domain, response, size, deadline, stack)
        # Started now, so the remote answer is closed even if the download never begins (a
        # client gone before the first byte): a started generator is always finalised.
        await anext(chunks)
        return Blob(size, chunks)


def _declared_size(domain: str, response: httpx.Response, max_bytes: int) -> int:
    if response.status_code != 200:
        raise RemoteUnavailable(domain, f"answered {response.status_code} for an asset")
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if ctype != ASSET_MEDIA_TYPE or encoding != "identity":
        raise RemoteUnavailable(domain, "answered an asset that is not plain octets")
    try:
        size = int(response.headers["content-length"])
    except (KeyError, ValueError):
        raise RemoteUnavailable(domain, "answered an asset without its length") from None
    if not 0 <= size <= max_bytes:
        raise RemoteUnavailable(domain, f"the asset is larger than the {max_bytes} bytes relayed")
    return size


async def _relay(
    domain: str, response: httpx.Response, size: int, deadline: float, stack: AsyncExitStack
) -> AsyncIterator[bytes]:
    import httpx  # loaded already: ``response`` came through it

    async with stack:  # the remote answer is closed however the download ends
        yield b""  # taken by ``open``: see there
        received = 0
        chunks = response.aiter_raw()
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                raise RemoteUnavailable(domain, "the asset took too long to arrive") from None
            except httpx.HTTPError as e:
                raise RemoteUnavailable(domain, f"broke off ({type(e).__name__})") from None
            if chunk is None:
                break
            received += len(chunk)
            if received > size:
                raise RemoteUnavailable(domain, "sent more than the asset's length")
            if chunk:
                yield chunk
        if received != size:
            raise RemoteUnavailable(domain, "sent less than the asset's length")
