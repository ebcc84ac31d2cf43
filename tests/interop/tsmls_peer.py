"""ts-mls (npm, pinned in tsmls/package-lock.json) as an interop peer.

``TsMlsDriver`` runs ``node tsmls/driver.mjs`` and talks JSON lines to it (bytes as hex);
``TsMlsPeer`` is one MLS client hosted in a driver. All peers share one driver process by
default (Node start-up costs ~100 ms; clients are isolated by name inside the driver).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from .node_driver import NodeDriver, ensure_node_packages, shared
from .node_driver import hex_or_none as _b
from .peer import (
    EXPORTER_CONTEXT,
    EXPORTER_LABEL,
    EXPORTER_LENGTH,
    CommitBundle,
    EpochState,
    Member,
    PublicGroupState,
    Received,
)

DRIVER_DIR = Path(__file__).resolve().parent / "tsmls"


def ensure_installed() -> None:
    """Fail with a clear message unless Node and ts-mls are installed (``npm ci`` on first
    use)."""
    ensure_node_packages("ts-mls", DRIVER_DIR, ("ts-mls",))


class TsMlsDriver(NodeDriver):
    """One ``node tsmls/driver.mjs`` subprocess."""

    def __init__(self) -> None:
        ensure_installed()
        super().__init__("ts-mls", DRIVER_DIR)


def shared_driver() -> TsMlsDriver:
    return shared(TsMlsDriver)


_client_names = itertools.count()


def _bundle(result: dict[str, Any]) -> CommitBundle:
    return CommitBundle(
        commit=bytes.fromhex(result["commit"]),
        welcome=_b(result["welcome"]),
        group_info=_b(result["group_info"]),
        ratchet_tree=_b(result["ratchet_tree"]),
        epoch=result["epoch"],
    )


class TsMlsPeer:
    """One ts-mls client (basic credential, cipher suite 1)."""

    implementation = "ts-mls"

    def __init__(
        self,
        identity: bytes,
        driver: TsMlsDriver | None = None,
        *,
        ratchet_tree_extension: bool = False,
    ) -> None:
        self.identity = identity
        self.name = f"ts-mls:{identity.decode(errors='replace')}"
        self._driver = driver or shared_driver()
        self._client = f"{identity.hex()}#{next(_client_names)}"
        # Whether Welcomes this peer creates carry the ratchet_tree extension.
        self.ratchet_tree_extension = ratchet_tree_extension

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        return self._driver.request(op, client=self._client, **args)

    def key_package(self) -> bytes:
        return bytes.fromhex(self._call("key_package", identity=self.identity.hex())["key_package"])

    def create_group(
        self, group_id: bytes, extensions: list[tuple[int, bytes]] = ()
    ) -> PublicGroupState:
        """``extensions``: GroupContext extensions as (type, extension_data)."""
        r = self._call(
            "create_group",
            identity=self.identity.hex(),
            group_id=group_id.hex(),
            ratchet_tree_extension=self.ratchet_tree_extension,
            extensions=[[t, d.hex()] for t, d in extensions],
        )
        return PublicGroupState(_b(r["group_info"]), bytes.fromhex(r["ratchet_tree"]))

    def add_members(self, group_id: bytes, key_packages: list[bytes]) -> CommitBundle:
        kps = [kp.hex() for kp in key_packages]
        return _bundle(self._call("add_members", group_id=group_id.hex(), key_packages=kps))

    def join(self, welcome: bytes, ratchet_tree: bytes | None = None) -> bytes:
        tree = None if ratchet_tree is None else ratchet_tree.hex()
        return bytes.fromhex(
            self._call("join", welcome=welcome.hex(), ratchet_tree=tree)["group_id"]
        )

    def process(self, message: bytes) -> Received:
        r = self._call("process", message=message.hex())
        return Received(
            kind=r["kind"],
            group_id=bytes.fromhex(r["group_id"]),
            epoch=r["epoch"],
            data=_b(r.get("data")),
            removed=r.get("removed", False),
        )

    def encrypt(self, group_id: bytes, plaintext: bytes) -> bytes:
        r = self._call("encrypt", group_id=group_id.hex(), plaintext=plaintext.hex())
        return bytes.fromhex(r["message"])

    def self_update(self, group_id: bytes) -> CommitBundle:
        return _bundle(self._call("self_update", group_id=group_id.hex()))

    def remove(self, group_id: bytes, leaf_index: int) -> CommitBundle:
        return _bundle(self._call("remove", group_id=group_id.hex(), leaf_index=leaf_index))

    def propose_remove(self, group_id: bytes, leaf_index: int) -> bytes:
        r = self._call("propose_remove", group_id=group_id.hex(), leaf_index=leaf_index)
        return bytes.fromhex(r["proposal"])

    def propose_add(self, group_id: bytes, key_package: bytes) -> bytes:
        r = self._call("propose_add", group_id=group_id.hex(), key_package=key_package.hex())
        return bytes.fromhex(r["proposal"])

    def add_external_psk(self, psk_id: bytes, secret: bytes) -> None:
        self._call("add_external_psk", psk_id=psk_id.hex(), secret=secret.hex())

    def commit_psk(
        self, group_id: bytes, *, psk_id: bytes | None = None, resumption_epoch: int | None = None
    ) -> CommitBundle:
        """Commit one PreSharedKey proposal: external ``psk_id`` or a resumption PSK."""
        return _bundle(
            self._call(
                "commit_psk",
                group_id=group_id.hex(),
                psk_id=None if psk_id is None else psk_id.hex(),
                resumption_epoch=resumption_epoch,
            )
        )

    def commit_pending(self, group_id: bytes) -> CommitBundle:
        return _bundle(self._call("commit_pending", group_id=group_id.hex()))

    def export_group_info(
        self,
        group_id: bytes,
        *,
        ratchet_tree_extension: bool = False,
        external_pub: bool = False,
        rfc_external_pub: bool = True,
    ) -> PublicGroupState:
        """``rfc_external_pub=False`` gives ts-mls's own (non-RFC) external_pub encoding."""
        r = self._call(
            "group_info",
            group_id=group_id.hex(),
            ratchet_tree_extension=ratchet_tree_extension,
            external_pub=external_pub,
            rfc_external_pub=rfc_external_pub,
        )
        return PublicGroupState(_b(r["group_info"]), bytes.fromhex(r["ratchet_tree"]))

    def join_external(
        self,
        group_info: bytes,
        ratchet_tree: bytes | None = None,
        *,
        rfc_external_pub: bool = True,
    ) -> tuple[bytes, CommitBundle]:
        """Join by external commit; returns (group id, the commit for the group and the DS).

        ``rfc_external_pub=False`` leaves ts-mls's own (non-RFC) external_pub parsing alone."""
        r = self._call(
            "join_external",
            identity=self.identity.hex(),
            group_info=group_info.hex(),
            ratchet_tree=None if ratchet_tree is None else ratchet_tree.hex(),
            rfc_external_pub=rfc_external_pub,
        )
        return bytes.fromhex(r["group_id"]), _bundle(r)

    def state(
        self,
        group_id: bytes,
        label: bytes = EXPORTER_LABEL,
        context: bytes = EXPORTER_CONTEXT,
        length: int = EXPORTER_LENGTH,
    ) -> EpochState:
        r = self._call(
            "state",
            group_id=group_id.hex(),
            exporter_label=label.hex(),
            exporter_context=context.hex(),
            exporter_length=length,
        )
        members = tuple(
            Member(m["leaf_index"], _b(m["identity"]), bytes.fromhex(m["signature_key"]))
            for m in r["members"]
        )
        return EpochState(
            group_id=group_id,
            epoch=r["epoch"],
            exporter=bytes.fromhex(r["exporter"]),
            epoch_authenticator=bytes.fromhex(r["epoch_authenticator"]),
            tree_hash=bytes.fromhex(r["tree_hash"]),
            leaf_index=r["leaf_index"],
            members=members,
        )
