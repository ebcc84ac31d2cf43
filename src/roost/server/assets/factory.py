"""Build the asset service from the configuration (the storage backend it names)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config import Config
from ..seal_key import SealKeyFile
from ..store import Database
from .remote import RemoteAssetSource
from .service import AssetService, AssetSettings
from .storage import BlobStore, FilesystemStore, S3Settings, S3Store


def make_store(config: Config) -> BlobStore:
    if config.assets_storage == "s3":
        return S3Store(
            S3Settings(
                bucket=config.assets_s3_bucket,
                endpoint_url=config.assets_s3_endpoint_url,
                region=config.assets_s3_region,
                prefix=config.assets_s3_prefix,
                access_key_id=config.assets_s3_access_key_id,
                secret_access_key=config.assets_s3_secret_access_key,
            )
        )
    return FilesystemStore(config.data_dir.resolve() / "assets")


def make_asset_service(
    db: Database,
    config: Config,
    seal_key: SealKeyFile,
    clock: Callable[[], float] = time.time,
    *,
    remote: RemoteAssetSource | None = None,
) -> AssetService:
    """``remote``: how assets of other domains are fetched (federation); without it, only
    this server's own assets can be downloaded."""
    limits = config.limits
    settings = AssetSettings(
        max_asset_bytes=limits.max_asset_bytes,
        quota_bytes=limits.asset_quota_bytes,
        default_ttl_seconds=limits.asset_default_ttl_seconds,
        max_ttl_seconds=limits.asset_max_ttl_seconds,
    )
    return AssetService(
        db,
        make_store(config),
        settings,
        seal_key,
        clock,
        home_domain=config.home_domain,
        remote=remote,
    )
