"""Schemathesis hooks for ``test_schemathesis.py`` (loaded by the CLI via SCHEMATHESIS_HOOKS).

- ``message/mls`` bodies are raw bytes (``type: string, format: binary``): sent as generated,
  like ``application/octet-stream``.
- Client routes get the bearer token of a freshly registered client. A fresh one is fetched
  whenever a token stops working, since the generated cases may delete the account (``DELETE
  /v1/me``) or remove the client. Federation routes authenticate servers by signature, which
  generated cases cannot produce: they are exercised unauthenticated (their 401s).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import schemathesis

from roost.client import RoostClient

SERVER_URL_ENV = "ROOST_SCHEMATHESIS_SERVER_URL"

schemathesis.serializer.alias("message/mls", "application/octet-stream")


async def _fresh_token(url: str) -> str:
    client = await RoostClient.register(url, f"st{uuid.uuid4().hex[:12]}")
    try:
        return await client.bearer_token()
    finally:
        await client.aclose()


@schemathesis.auth(retry_on=[401]).apply_to(path_regex="^/v1/")
class FreshClientToken:
    def get(self, case: Any, context: Any) -> str:
        return asyncio.run(_fresh_token(os.environ[SERVER_URL_ENV]))

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
