"""Blob storage backends: where the ciphertext bytes live (metadata stays in the database).

Keys are the asset ids the service generates (hex), so backends need no escaping. ``put``
consumes an async stream and must leave nothing behind if the stream raises (the service
aborts an upload that breaks its size cap by raising from the stream); ``delete`` is idempotent
so a sweep interrupted half-way simply runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READ_CHUNK = 256 * 1024
WRITE_BUFFER = 1024 * 1024  # batch small ASGI chunks into fewer thread hops / syscalls


@dataclass(frozen=True, slots=True)
class Blob:
    size: int
    chunks: AsyncIterator[bytes]


class BlobStore(ABC):
    kind: str

    @abstractmethod
    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the stream under ``key`` atomically (all or nothing); returns its size."""

    @abstractmethod
    async def get(self, key: str) -> Blob | None:
        """The stored blob, or None if there is none."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the blob if present."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


class FilesystemStore(BlobStore):
    """Files under ``root/<2 hex>/<key>``, written to ``root/.tmp`` then renamed into place, so
    a reader or a crash never sees a partial blob."""

    kind = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_of(self, key: str) -> Path:
        return self.root / key[:2] / key

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        tmp = self.tmp / f"{key}.{secrets.token_hex(8)}"
        f = await asyncio.to_thread(open, tmp, "xb")
        size = 0
        try:
            buffer = bytearray()
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) >= WRITE_BUFFER:
                    await asyncio.to_thread(f.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await asyncio.to_thread(f.write, bytes(buffer))
            await asyncio.to_thread(self._commit, f, tmp, self.path_of(key))
        except BaseException:
            await asyncio.to_thread(self._discard, f, tmp)
            raise
        return size

    @staticmethod
    def _commit(f: Any, tmp: Path, final: Path) -> None:
        f.flush()
        os.fsync(f.fileno())
        f.close()
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
        # make the rename itself durable
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _discard(f: Any, tmp: Path) -> None:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

    async def get(self, key: str) -> Blob | None:
        try:
            f = await asyncio.to_thread(open, self.path_of(key), "rb")
        except FileNotFoundError:
            return None
        size = os.fstat(f.fileno()).st_size
        return Blob(size, self._read(f))

    @staticmethod
    async def _read(f: Any) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
                yield chunk
        finally:
            f.close()

    async def delete(self, key: str) -> None:
        def unlink() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.path_of(key).unlink()

        await asyncio.to_thread(unlink)

    async def sweep_temporary(self, older_than: float) -> int:
        """Remove temporary files a crashed process left behind (mtime before ``older_than``)."""

        def sweep() -> int:
            removed = 0
            for entry in os.scandir(self.tmp):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < older_than:
                        os.unlink(entry.path)
                        removed += 1
            return removed

        return await asyncio.to_thread(sweep)


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str
    endpoint_url: str = ""  # empty: AWS itself
    region: str = "us-east-1"
    prefix: str = "assets/"
    access_key_id: str = ""  # empty: boto3's default credential chain (env, profile, role)
    secret_access_key: str = ""


class S3Store(BlobStore):
    """Any S3-compatible object store through boto3, run in worker threads.

    Why boto3 in threads rather than aiobotocore: boto3 is the reference SDK and speaks to every
    S3-compatible server, aiobotocore pins narrow botocore ranges (conflicts with other users of
    botocore), and the calls here are few and coarse (one per 8 MiB part), so a thread hop per
    call costs nothing measurable. boto3 clients are thread-safe.
    """

    kind = "s3"
    PART_SIZE = 8 * 1024 * 1024  # multipart parts (S3 needs >= 5 MiB for all but the last)

    def __init__(self, settings: S3Settings) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.settings = settings
        kwargs: dict[str, Any] = {"region_name": settings.region}
        if settings.endpoint_url:
            kwargs["endpoint_url"] = settings.endpoint_url
        if settings.access_key_id:
            kwargs["aws_access_key_id"] = settings.access_key_id
            kwargs["aws_secret_access_key"] = settings.secret_access_key
        config = BotoConfig(
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=32,
            connect_timeout=10,
            read_timeout=60,
            # S3-compatible servers (MinIO, moto, Ceph) usually need path-style addressing
            s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        )
        self.client = boto3.session.Session().client("s3", config=config, **kwargs)

    def _key(self, key: str) -> str:
        return self.settings.prefix + key

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        bucket, name = self.settings.bucket, self._key(key)
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) >= self.PART_SIZE:
                    if upload_id is None:
                        created = await asyncio.to_thread(
                            self.client.create_multipart_upload, Bucket=bucket, Key=name
                        )
                        upload_id = created["UploadId"]
                    parts.append(await self._upload_part(name, upload_id, len(parts) + 1, buffer))
                    buffer = bytearray()
            if upload_id is None:  # small blob: one request
                await asyncio.to_thread(
                    self.client.put_object, Bucket=bucket, Key=name, Body=bytes(buffer)
                )
                return size
            if buffer or not parts:
                parts.append(await self._upload_part(name, upload_id, len(parts) + 1, buffer))
            await asyncio.to_thread(
                self.client.complete_multipart_upload,
                Bucket=bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(
                        self.client.abort_multipart_upload,
                        Bucket=bucket,
                        Key=name,
                        UploadId=upload_id,
                    )
            raise
        return size

    async def _upload_part(
        self, name: str, upload_id: str, number: int, data: bytearray
    ) -> dict[str, Any]:
        answer = await asyncio.to_thread(
            self.client.upload_part,
            Bucket=self.settings.bucket,
            Key=name,
            UploadId=upload_id,
            PartNumber=number,
            Body=bytes(data),
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    async def get(self, key: str) -> Blob | None:
        try:
            answer = await asyncio.to_thread(
                self.client.get_object, Bucket=self.settings.bucket, Key=self._key(key)
            )
        except self.client.exceptions.NoSuchKey:
            return None
        return Blob(int(answer["ContentLength"]), self._read(answer["Body"]))

    @staticmethod
    async def _read(body: Any) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(body.read, READ_CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(
            self.client.delete_object, Bucket=self.settings.bucket, Key=self._key(key)
        )

    async def close(self) -> None:
        self.client.close()
