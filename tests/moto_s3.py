"""A local S3-compatible server for the asset tests: moto in server mode, a real process on a
loopback port, plus helpers to look into its bucket."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

ACCESS_KEY = "roost-test-access"
SECRET_KEY = "roost-test-secret-key"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoS3:
    endpoint_url: str
    proc: subprocess.Popen[bytes]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"roost-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        answer = self.client().list_objects_v2(Bucket=bucket)
        return [o["Key"] for o in answer.get("Contents", [])]

    def pending_multipart(self, bucket: str) -> int:
        return len(self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    def env(self, bucket: str) -> dict[str, str]:
        """``ROOST_*`` settings pointing a server at ``bucket``."""
        return {
            "ROOST_ASSETS_STORAGE": "s3",
            "ROOST_ASSETS_S3_BUCKET": bucket,
            "ROOST_ASSETS_S3_ENDPOINT_URL": self.endpoint_url,
            "ROOST_ASSETS_S3_REGION": REGION,
            "ROOST_ASSETS_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "ROOST_ASSETS_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"moto server exited with {proc.returncode}")
        try:
            httpx.get(url + "/moto-api/", timeout=2)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto server did not start in 60 s")
            time.sleep(0.2)
    try:
        yield MotoS3(url, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
