"""Server configuration: a TOML file plus ``ROOST_*`` environment overrides, validated at start.

Precedence: built-in defaults < TOML file < environment. Every problem is collected and reported
together in one ``ConfigError`` so an operator can fix a file in one pass.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:8448"
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


SQLITE_SYNCHRONOUS = ("full", "normal")


class ConfigError(Exception):
    """The configuration is invalid; the message lists every problem found."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1024 * 1024
    max_message_bytes: int = 512 * 1024
    max_list_length: int = 100
    max_keypackages_per_batch: int = 100
    keypackage_max_lifetime_days: int = 90
    max_fetch_messages: int = 500
    max_fetch_bytes: int = 4 * 1024 * 1024
    max_queues_per_client: int = 1000  # one per group membership
    max_clients_per_user: int = 16
    # token-bucket rates: events per minute (burst = the same number)
    registrations_per_minute: int = 10
    claims_per_minute: int = 60
    # KeyPackage claims of one target user over all requesters (its own clients excepted), so
    # that many requesters together cannot drain it (docs/api.md, "KeyPackages")
    claims_per_target_per_minute: int = 10
    # ordinary KeyPackages per client kept back from requesters the user has not accepted
    # (an unanswered connection request): past it they get the last-resort package
    keypackage_reserve: int = 5
    # items the DS holds for a leaf that has not registered a queue yet (a fresh joiner, or a
    # client added under a connection request not accepted yet); past it the leaf is dropped
    # (marked gone, a server Remove proposal follows) so an absent client cannot grow them
    max_held_per_leaf: int = 10000
    auth_per_minute: int = 120
    # directory searches of another domain per requesting user (each is a signed request to it)
    remote_searches_per_minute: int = 30
    # GET /v1/groups per client: the server opens every sealed member row to answer (a scan)
    group_lists_per_minute: int = 30
    # realtime WebSocket (notify/): app-level ping cadence advertised to clients, idle cut-off,
    # and the per-connection window of items sent but not yet acked (bounds server memory)
    realtime_ping_interval_seconds: int = 20
    realtime_idle_timeout_seconds: int = 60
    realtime_window_messages: int = 1000
    realtime_window_bytes: int = 4 * 1024 * 1024
    # lifetime of a realtime ticket (POST /v1/realtime/tickets): single use, for browsers,
    # which cannot send an Authorization header on a WebSocket upgrade
    realtime_ticket_ttl_seconds: int = 30
    # encrypted assets (assets/): per-blob size cap, per-user quota, lifetimes
    max_asset_bytes: int = 100 * 1024 * 1024
    asset_quota_bytes: int = 1024 * 1024 * 1024
    asset_default_ttl_seconds: int = 30 * 86400
    asset_max_ttl_seconds: int = 365 * 86400
    # HTTP connections (connection_limits.py, docs/operations.md "Connection limits"): a client
    # must send a request's headers within header_timeout (from connecting or from the request's
    # first byte), its body within body_timeout (plus 1 s per 64 KiB declared), and may keep an
    # idle connection open keepalive_timeout between requests; beyond max_connections open
    # connections (realtime sockets included) a new one gets 503 and is closed.
    header_timeout_seconds: int = 10
    body_timeout_seconds: int = 30
    keepalive_timeout_seconds: int = 5
    max_connections: int = 1000


@dataclass(frozen=True, slots=True)
class Config:
    home_domain: str = "localhost"
    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path("./data")
    database_url: str = ""  # empty: SQLite at <data_dir>/roost.db
    # SQLite: "full" syncs the WAL at every commit, so an answered write survives a power loss
    # or OS crash; "normal" survives only a crash of Roost (faster, weaker). PostgreSQL: unused.
    sqlite_synchronous: str = "full"
    # 32 random bytes (seal_key.py) that seal each queue's creator for push, who is in a group,
    # each asset's uploader and each push registration's target; empty:
    # <data_dir>/queue-seal.key, created on first use. Every process of one server (and `roost db upgrade`) needs the same file; it
    # is not in the database on purpose.
    queue_seal_key_file: str = ""
    registration_policy: str = "open"  # "open" | "token"
    token_ttl_seconds: int = 900
    client_certificate_days: int = 365
    log_level: str = "info"
    log_format: str = "text"  # "text" | "json" (one JSON object per line; observability/)
    metrics_enabled: bool = True  # serve GET /metrics (Prometheus text format)
    metrics_token: str = ""  # non-empty: /metrics requires "Authorization: Bearer <token>"
    limits: Limits = field(default_factory=Limits)
    # addresses (or networks) of reverse proxies whose X-Forwarded-For / -Proto is believed;
    # empty: nobody's, the peer address of the TCP connection is the client's
    trusted_proxies: tuple[str, ...] = ()
    # encrypted asset blobs: "filesystem" (<data_dir>/assets) or "s3" (any S3-compatible store)
    assets_storage: str = "filesystem"
    assets_s3_bucket: str = ""
    assets_s3_endpoint_url: str = ""  # empty: AWS S3 itself
    assets_s3_region: str = "us-east-1"
    assets_s3_prefix: str = "assets/"
    assets_s3_access_key_id: str = ""  # empty: boto3's default chain (AWS_* env, profile, role)
    assets_s3_secret_access_key: str = ""
    maintenance_interval_seconds: int = 300  # expired-row and asset garbage-collection sweep
    # push notifications (push/): see docs/operations.md, "Push notifications"
    push_coalesce_seconds: int = 10  # at most one push per client per window
    push_queue_size: int = 10000  # pending wake-ups; beyond it wake-ups are dropped (logged)
    push_timeout_seconds: int = 10
    push_allow_insecure_endpoints: bool = False  # http:// and internal hosts: tests only
    # several processes (PostgreSQL): a crashed process's clients count as online this long
    push_presence_ttl_seconds: int = 30
    push_vapid_private_key_file: str = ""  # PEM P-256 key; empty: generated, kept in the DB
    push_vapid_subject: str = ""  # empty: mailto:postmaster@<home_domain>
    push_apns_key_file: str = ""  # .p8 (PEM) token-signing key; empty: APNs disabled
    push_apns_key_id: str = ""
    push_apns_team_id: str = ""
    push_apns_topic: str = ""  # the app's bundle id
    push_apns_base_url: str = "https://api.push.apple.com"
    push_fcm_service_account_file: str = ""  # service-account JSON; empty: FCM disabled
    push_fcm_project_id: str = ""
    push_fcm_base_url: str = "https://fcm.googleapis.com"
    # federation (federation/): see docs/operations.md, "Federation"
    federation_resolve: dict[str, str] = field(default_factory=dict)  # domain -> "host:port"
    federation_insecure_domains: tuple[str, ...] = ()  # plain http:// towards these (tests)
    federation_timeout_seconds: int = 10
    federation_signature_window_seconds: int = 300
    # outbound.py: connect to loopback/private/link-local/reserved addresses on behalf of
    # clients (Web Push endpoints) and remote domains (federation). Off: SSRF protection.
    # Hosts the operator names (federation_resolve, APNs/FCM URLs) are always allowed.
    outbound_allow_private: bool = False

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def is_default_sqlite(self) -> bool:
        return not self.database_url

    @property
    def queue_seal_key_path(self) -> Path:
        if self.queue_seal_key_file:
            return Path(self.queue_seal_key_file)
        return self.data_dir / "queue-seal.key"

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the async driver filled in."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'roost.db').resolve()}"
        for prefix, driver in (
            ("sqlite:", "sqlite+aiosqlite:"),
            ("postgresql:", "postgresql+asyncpg:"),
            ("postgres:", "postgresql+asyncpg:"),
        ):
            if url.startswith(prefix):
                return driver + url[len(prefix) :]
        return url


_ENV_TOP = {
    "ROOST_ASSETS_STORAGE": "assets_storage",
    "ROOST_ASSETS_S3_BUCKET": "assets_s3_bucket",
    "ROOST_ASSETS_S3_ENDPOINT_URL": "assets_s3_endpoint_url",
    "ROOST_ASSETS_S3_REGION": "assets_s3_region",
    "ROOST_ASSETS_S3_PREFIX": "assets_s3_prefix",
    "ROOST_ASSETS_S3_ACCESS_KEY_ID": "assets_s3_access_key_id",
    "ROOST_ASSETS_S3_SECRET_ACCESS_KEY": "assets_s3_secret_access_key",
    "ROOST_MAINTENANCE_INTERVAL_SECONDS": "maintenance_interval_seconds",
    "ROOST_HOME_DOMAIN": "home_domain",
    "ROOST_LISTEN": "listen",
    "ROOST_DATA_DIR": "data_dir",
    "ROOST_DATABASE_URL": "database_url",
    "ROOST_REGISTRATION_POLICY": "registration_policy",
    "ROOST_TOKEN_TTL_SECONDS": "token_ttl_seconds",
    "ROOST_CLIENT_CERTIFICATE_DAYS": "client_certificate_days",
    "ROOST_LOG_LEVEL": "log_level",
    "ROOST_LOG_FORMAT": "log_format",
    "ROOST_SQLITE_SYNCHRONOUS": "sqlite_synchronous",
    "ROOST_QUEUE_SEAL_KEY_FILE": "queue_seal_key_file",
    "ROOST_METRICS_ENABLED": "metrics_enabled",
    "ROOST_METRICS_TOKEN": "metrics_token",
    "ROOST_TRUSTED_PROXIES": "trusted_proxies",
    "ROOST_OUTBOUND_ALLOW_PRIVATE": "outbound_allow_private",
    "ROOST_FEDERATION_RESOLVE": "federation_resolve",
    "ROOST_FEDERATION_INSECURE_DOMAINS": "federation_insecure_domains",
    "ROOST_FEDERATION_TIMEOUT_SECONDS": "federation_timeout_seconds",
    "ROOST_FEDERATION_SIGNATURE_WINDOW_SECONDS": "federation_signature_window_seconds",
}
# every push_* setting: ROOST_PUSH_<NAME>
_ENV_TOP.update(
    {f"ROOST_{f.name.upper()}": f.name for f in fields(Config) if f.name.startswith("push_")}
)


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read ``path`` (or ``$ROOST_CONFIG``, or ``./roost.toml`` if present), apply env overrides."""
    env = dict(os.environ) if env is None else env
    raw: dict[str, Any] = {}
    if path is None and env.get("ROOST_CONFIG"):
        path = env["ROOST_CONFIG"]
    if path is None and Path("roost.toml").is_file():
        path = "roost.toml"
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return build_config(raw, env)


def build_config(raw: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    """Validate a parsed TOML mapping plus env overrides into a ``Config``."""
    env = env or {}
    problems: list[str] = []
    top = {f.name for f in fields(Config)} - {"limits"}
    limit_names = {f.name for f in fields(Limits)}
    values: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "limits":
            if not isinstance(value, dict):
                problems.append("[limits] must be a table")
                continue
            for lk, lv in value.items():
                if lk not in limit_names:
                    problems.append(f"unknown setting limits.{lk}")
                else:
                    limits[lk] = lv
        elif key in top:
            values[key] = value
        else:
            problems.append(f"unknown setting {key}")
    for var, name in _ENV_TOP.items():
        if var in env:
            values[name] = env[var]
    for name in limit_names:
        var = f"ROOST_LIMITS_{name.upper()}"
        if var in env:
            limits[name] = env[var]

    config = Config()
    for name, value in values.items():
        default = getattr(config, name)
        coerced = _coerce(name, value, default, problems)
        if coerced is not None:
            config = replace(config, **{name: coerced})
    lim = Limits()
    for name, value in limits.items():
        coerced = _coerce(f"limits.{name}", value, getattr(lim, name), problems)
        if coerced is not None:
            lim = replace(lim, **{name: coerced})
    config = replace(config, limits=lim)
    config = replace(config, home_domain=config.home_domain.lower())
    problems.extend(_validate(config))
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return config


def _coerce(name: str, value: Any, default: Any, problems: list[str]) -> Any:
    if isinstance(default, dict):  # TOML table, or env "a.test=host:port,b.test=host:port"
        if isinstance(value, str):
            pairs = [p.partition("=") for p in value.split(",") if p.strip()]
            if all(sep for _, sep, _ in pairs):
                return {k.strip().lower(): v.strip() for k, _, v in pairs}
        elif isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return {str(k).lower(): v.strip() for k, v in value.items()}
        problems.append(f'{name} must be a table of domain = "host:port", got {value!r}')
        return None
    if isinstance(default, tuple):  # TOML array of strings, or env comma list
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, list | tuple) and all(isinstance(i, str) for i in items):
            return tuple(i.strip().lower() for i in items if i.strip())
        problems.append(f"{name} must be a list of strings, got {value!r}")
        return None
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif isinstance(default, Path):
        if isinstance(value, str) and value:
            return Path(value)
    elif isinstance(default, str) and isinstance(value, str):
        return value
    problems.append(f"{name} must be a {type(default).__name__}, got {value!r}")
    return None


def _validate(c: Config) -> list[str]:
    problems: list[str] = []
    if not is_valid_domain(c.home_domain):
        problems.append(f"home_domain {c.home_domain!r} is not a valid domain name")
    host, sep, port = c.listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        problems.append(f"listen {c.listen!r} must be host:port with a port in 1-65535")
    elif host.strip("[]") not in ("localhost",) and not _is_ip(host.strip("[]")):
        problems.append(f"listen host {host!r} must be an IP address or localhost")
    if c.registration_policy not in ("open", "token"):
        problems.append(
            f"registration_policy must be 'open' or 'token', got {c.registration_policy!r}"
        )
    url = c.database_url
    if url and not url.startswith(("sqlite:", "sqlite+aiosqlite:", "postgresql", "postgres:")):
        problems.append(
            f"database_url {_redact(url)!r} must start with sqlite:/// or postgresql://"
        )
    if c.log_level.lower() not in ("debug", "info", "warning", "error"):
        problems.append("log_level must be one of debug, info, warning, error")
    if c.sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        problems.append(
            f"sqlite_synchronous must be 'full' or 'normal', got {c.sqlite_synchronous!r}"
        )
    if c.log_format not in ("text", "json"):
        problems.append(f"log_format must be 'text' or 'json', got {c.log_format!r}")
    for proxy in c.trusted_proxies:
        if not _is_network(proxy):
            problems.append(f"trusted_proxies: {proxy!r} is not an IP address or network")
    if c.metrics_token and len(c.metrics_token) < 16:
        problems.append("metrics_token must be empty (no token) or at least 16 characters")
    for name, minimum in (("token_ttl_seconds", 30), ("client_certificate_days", 1)):
        if getattr(c, name) < minimum:
            problems.append(f"{name} must be at least {minimum}")
    for f in fields(Limits):
        if getattr(c.limits, f.name) < 1:
            problems.append(f"limits.{f.name} must be a positive integer")
    if c.limits.max_message_bytes > c.limits.max_body_bytes:
        problems.append("limits.max_message_bytes must not exceed limits.max_body_bytes")
    problems.extend(_validate_assets(c))
    problems.extend(_validate_push(c))
    problems.extend(_validate_federation(c))
    return problems


def _validate_federation(c: Config) -> list[str]:
    problems: list[str] = []
    for domain, address in c.federation_resolve.items():
        host, sep, port = address.rpartition(":")
        if not is_valid_domain(domain):
            problems.append(f"federation_resolve: {domain!r} is not a valid domain name")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"federation_resolve: {domain} -> {address!r} must be host:port")
    for domain in c.federation_insecure_domains:
        if not is_valid_domain(domain):
            problems.append(f"federation_insecure_domains: {domain!r} is not a valid domain")
    if c.federation_timeout_seconds < 1:
        problems.append("federation_timeout_seconds must be at least 1")
    if not 30 <= c.federation_signature_window_seconds <= 3600:
        problems.append("federation_signature_window_seconds must be between 30 and 3600")
    return problems


def _validate_push(c: Config) -> list[str]:
    problems: list[str] = []
    for name in ("push_coalesce_seconds", "push_queue_size", "push_timeout_seconds"):
        if getattr(c, name) < (0 if name == "push_coalesce_seconds" else 1):
            problems.append(f"{name} must not be negative or zero")
    if c.push_presence_ttl_seconds < 3:  # refreshed every ttl/3 seconds
        problems.append("push_presence_ttl_seconds must be at least 3")
    for name in ("push_apns_base_url", "push_fcm_base_url"):
        if not getattr(c, name).startswith(("https://", "http://")):
            problems.append(f"{name} must be an http(s):// URL")
    apns = ("push_apns_key_id", "push_apns_team_id", "push_apns_topic")
    if c.push_apns_key_file and not all(getattr(c, n) for n in apns):
        problems.append("push_apns_key_file needs push_apns_key_id, _team_id and _topic")
    if c.push_fcm_service_account_file and not c.push_fcm_project_id:
        problems.append("push_fcm_service_account_file needs push_fcm_project_id")
    for name in (
        "push_vapid_private_key_file",
        "push_apns_key_file",
        "push_fcm_service_account_file",
    ):
        if getattr(c, name) and not Path(getattr(c, name)).is_file():
            problems.append(f"{name}: {getattr(c, name)} is not a readable file")
    if c.push_vapid_subject and not c.push_vapid_subject.startswith(("mailto:", "https://")):
        problems.append("push_vapid_subject must be a mailto: or https: URI")
    return problems


def _validate_assets(c: Config) -> list[str]:
    problems: list[str] = []
    if c.assets_storage not in ("filesystem", "s3"):
        problems.append(f"assets_storage must be 'filesystem' or 's3', got {c.assets_storage!r}")
    if c.assets_storage == "s3" and not c.assets_s3_bucket:
        problems.append("assets_s3_bucket is required when assets_storage is 's3'")
    if c.assets_s3_endpoint_url and not c.assets_s3_endpoint_url.startswith(
        ("http://", "https://")
    ):
        problems.append("assets_s3_endpoint_url must be an http:// or https:// URL")
    if bool(c.assets_s3_access_key_id) != bool(c.assets_s3_secret_access_key):
        problems.append("assets_s3_access_key_id and assets_s3_secret_access_key go together")
    if c.limits.asset_default_ttl_seconds > c.limits.asset_max_ttl_seconds:
        problems.append("limits.asset_default_ttl_seconds must not exceed asset_max_ttl_seconds")
    if c.maintenance_interval_seconds < 1:
        problems.append("maintenance_interval_seconds must be at least 1")
    return problems


def is_valid_domain(domain: str) -> bool:
    if not domain or len(domain) > 253:
        return False
    return all(_DOMAIN_LABEL.match(label) for label in domain.split("."))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _redact(url: str) -> str:
    """Hide a password in a database URL before it reaches a message or log."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
