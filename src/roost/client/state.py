"""The client's local state directory (``--home``, default ``~/.roost``).

Layout (directory 0700, every file 0600, each written atomically):

- ``client.json``      server URL, ids, credential chain and pinned AS certificate (DER, hex),
                       other domains' AS certificates fetched through the home server (by
                       domain, DER hex), bearer token and expiry, the keys of queues made with
                       ``create_queue`` (by queue id)
- ``signature.key``    the client's MLS signature private key (raw bytes)
- ``keypackages.json`` private HPKE keys of published KeyPackages, by KeyPackageRef (hex)
- ``groups/<id>.mls``  the member state of each MLS group this client is in (contains secrets)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StateError

DEFAULT_HOME = Path("~/.roost")

_CLIENT_FILE = "client.json"
_KEY_FILE = "signature.key"
_KEYPACKAGES_FILE = "keypackages.json"
_GROUPS_DIR = "groups"


@dataclass(slots=True)
class KeyPackageSecrets:
    """What a client must keep to join a group from one of its published KeyPackages."""

    init_private: bytes
    encryption_private: bytes
    last_resort: bool = False
    not_after: int = 0  # the KeyPackage's lifetime end: the secrets can go after it
    key_package: bytes = b""  # the encoded KeyPackage (a Welcome names it by reference)

    def to_json(self) -> dict[str, Any]:
        return {
            "init_private": self.init_private.hex(),
            "encryption_private": self.encryption_private.hex(),
            "last_resort": self.last_resort,
            "not_after": self.not_after,
            "key_package": self.key_package.hex(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KeyPackageSecrets:
        return cls(
            bytes.fromhex(d["init_private"]),
            bytes.fromhex(d["encryption_private"]),
            bool(d.get("last_resort", False)),
            int(d.get("not_after", 0)),
            bytes.fromhex(d.get("key_package", "")),
        )


@dataclass(slots=True)
class ClientState:
    server: str
    signature_private: bytes
    home_domain: str = ""
    user_id: str = ""
    user_uuid: str = ""
    client_id: str = ""
    cipher_suite: int = 1
    credential_chain: list[bytes] = field(default_factory=list)
    # The AS certificate seen at registration, pinned: credentials are verified against it.
    as_certificate: bytes = b""
    # Other domains' AS certificates (DER), fetched through the home server on first use.
    remote_as_certificates: dict[str, bytes] = field(default_factory=dict)
    token: str = ""
    token_expires_at: float = 0.0
    pending_request: str = ""  # a client request awaiting approval by another client
    direct_acked: int = 0  # this client's ack cursor on the user's direct queue
    # Keys of the queues made with ``create_queue``, by queue id (the group queue's key is
    # kept with its id in ``group_client.json``).
    queue_keys: dict[str, str] = field(default_factory=dict, repr=False)
    keypackages: dict[str, KeyPackageSecrets] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        return bool(self.client_id and self.credential_chain)


def _write_private(path: Path, data: bytes) -> None:
    """Write via a 0600 temp file and rename, so a crash never leaves a torn or readable file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing leftover temp file
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Home:
    """Load and save one client's state under a directory."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path if path is not None else DEFAULT_HOME).expanduser()

    def exists(self) -> bool:
        return (self.path / _CLIENT_FILE).exists()

    def ensure_dir(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    def save(self, state: ClientState) -> None:
        self.ensure_dir()
        meta = {
            "server": state.server,
            "home_domain": state.home_domain,
            "user_id": state.user_id,
            "user_uuid": state.user_uuid,
            "client_id": state.client_id,
            "cipher_suite": state.cipher_suite,
            "credential_chain": [c.hex() for c in state.credential_chain],
            "as_certificate": state.as_certificate.hex(),
            "remote_as_certificates": {
                d: c.hex() for d, c in sorted(state.remote_as_certificates.items())
            },
            "token": state.token,
            "token_expires_at": state.token_expires_at,
            "pending_request": state.pending_request,
            "direct_acked": state.direct_acked,
            "queue_keys": dict(sorted(state.queue_keys.items())),
        }
        _write_private(self.path / _KEY_FILE, state.signature_private)
        kps = {ref: s.to_json() for ref, s in state.keypackages.items()}
        _write_private(self.path / _KEYPACKAGES_FILE, json.dumps(kps, indent=1).encode())
        _write_private(self.path / _CLIENT_FILE, json.dumps(meta, indent=1).encode())

    def load(self) -> ClientState:
        try:
            meta = json.loads((self.path / _CLIENT_FILE).read_text())
            key = (self.path / _KEY_FILE).read_bytes()
            kp_path = self.path / _KEYPACKAGES_FILE
            kps = json.loads(kp_path.read_text()) if kp_path.exists() else {}
        except FileNotFoundError as e:
            raise StateError(f"no client state in {self.path} (register or login first)") from e
        except (OSError, ValueError) as e:
            raise StateError(f"unreadable client state in {self.path}: {e}") from e
        try:
            return ClientState(
                server=meta["server"],
                signature_private=key,
                home_domain=meta.get("home_domain", ""),
                user_id=meta.get("user_id", ""),
                user_uuid=meta.get("user_uuid", ""),
                client_id=meta.get("client_id", ""),
                cipher_suite=int(meta.get("cipher_suite", 1)),
                credential_chain=[bytes.fromhex(c) for c in meta.get("credential_chain", [])],
                as_certificate=bytes.fromhex(meta.get("as_certificate", "")),
                remote_as_certificates={
                    str(d): bytes.fromhex(c)
                    for d, c in meta.get("remote_as_certificates", {}).items()
                },
                token=meta.get("token", ""),
                token_expires_at=float(meta.get("token_expires_at", 0.0)),
                pending_request=meta.get("pending_request", ""),
                direct_acked=int(meta.get("direct_acked", 0)),
                queue_keys={str(q): str(k) for q, k in meta.get("queue_keys", {}).items()},
                keypackages={ref: KeyPackageSecrets.from_json(d) for ref, d in kps.items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"corrupt client state in {self.path}: {e}") from e

    def _group_path(self, group_id: bytes) -> Path:
        return self.path / _GROUPS_DIR / f"{group_id.hex()}.mls"

    def save_group(self, group_id: bytes, data: bytes) -> None:
        self.ensure_dir()
        (self.path / _GROUPS_DIR).mkdir(mode=0o700, exist_ok=True)
        _write_private(self._group_path(group_id), data)

    def load_group(self, group_id: bytes) -> bytes:
        try:
            return self._group_path(group_id).read_bytes()
        except FileNotFoundError as e:
            raise StateError(f"no group {group_id.hex()} in {self.path}") from e

    def group_ids(self) -> list[bytes]:
        folder = self.path / _GROUPS_DIR
        if not folder.is_dir():
            return []
        return sorted(bytes.fromhex(p.stem) for p in folder.glob("*.mls"))

    def delete(self) -> None:
        """Forget this client (after account deletion or client removal)."""
        for name in (_CLIENT_FILE, _KEY_FILE, _KEYPACKAGES_FILE):
            (self.path / name).unlink(missing_ok=True)
        for group_id in self.group_ids():
            self._group_path(group_id).unlink(missing_ok=True)
        # The group client's queue cursors and the plaintext message history go too.
        (self.path / "group_client.json").unlink(missing_ok=True)
        history = self.path / "history"
        if history.is_dir():
            for f in history.glob("*.jsonl"):
                f.unlink(missing_ok=True)
            history.rmdir()
