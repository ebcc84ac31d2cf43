"""Asset settings: defaults, environment overrides and validation (all problems at once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.server.assets.factory import make_store
from roost.server.assets.storage import FilesystemStore, S3Store
from roost.server.config import ConfigError, build_config


def test_defaults_use_the_filesystem_under_the_data_dir(tmp_path: Path) -> None:
    config = build_config({"data_dir": str(tmp_path)}, {})
    assert config.assets_storage == "filesystem"
    assert config.maintenance_interval_seconds == 300
    assert config.limits.max_asset_bytes == 100 * 1024 * 1024
    assert config.limits.asset_quota_bytes == 1024**3
    store = make_store(config)
    assert isinstance(store, FilesystemStore)
    assert store.root == tmp_path.resolve() / "assets"


def test_s3_from_the_environment() -> None:
    env = {
        "ROOST_ASSETS_STORAGE": "s3",
        "ROOST_ASSETS_S3_BUCKET": "blobs",
        "ROOST_ASSETS_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "ROOST_ASSETS_S3_ACCESS_KEY_ID": "id",
        "ROOST_ASSETS_S3_SECRET_ACCESS_KEY": "secret",
        "ROOST_ASSETS_S3_PREFIX": "roost/",
        "ROOST_LIMITS_MAX_ASSET_BYTES": "1000",
        "ROOST_MAINTENANCE_INTERVAL_SECONDS": "7",
    }
    config = build_config({}, env)
    assert config.limits.max_asset_bytes == 1000
    assert config.maintenance_interval_seconds == 7
    store = make_store(config)
    assert isinstance(store, S3Store)
    assert store.settings.bucket == "blobs" and store.settings.prefix == "roost/"
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"assets_storage": "tape"}, "assets_storage must be 'filesystem' or 's3'"),
        ({"assets_storage": "s3"}, "assets_s3_bucket is required"),
        ({"assets_s3_endpoint_url": "minio:9000"}, "must be an http:// or https:// URL"),
        ({"assets_s3_access_key_id": "id"}, "go together"),
        (
            {"limits": {"asset_default_ttl_seconds": 10, "asset_max_ttl_seconds": 5}},
            "must not exceed asset_max_ttl_seconds",
        ),
        ({"maintenance_interval_seconds": 0}, "maintenance_interval_seconds must be at least 1"),
        ({"limits": {"max_asset_bytes": 0}}, "limits.max_asset_bytes must be a positive integer"),
        ({"limits": {"asset_quota_bytes": "lots"}}, "limits.asset_quota_bytes must be a int"),
    ],
)
def test_invalid_settings_are_reported(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_config(raw, {})
    assert message in str(e.value)


def test_all_asset_problems_reported_together() -> None:
    with pytest.raises(ConfigError) as e:
        build_config({"assets_storage": "s3", "assets_s3_secret_access_key": "x"}, {})
    assert "assets_s3_bucket is required" in str(e.value)
    assert "go together" in str(e.value)
