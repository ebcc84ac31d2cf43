"""Wire's core-crypto (npm @wireapp/core-crypto, its browser/WASM build, pinned in
corecrypto/package-lock.json) as an interop peer.

``CoreCryptoDriver`` runs ``node corecrypto/driver.mjs`` (JSON lines, bytes as hex);
``CoreCryptoPeer`` is one core-crypto client in it. core-crypto's API differs from the other
peers' in ways docs/interop.md lists: members are named by Wire client id, not leaf index
(``remove_identity``); its exporter has a fixed label (``state`` reports that secret); it
exposes no tree hash, leaf index, ratchet tree or stand-alone GroupInfo; and it only joins
from Welcomes that carry the ratchet tree.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

from .node_driver import NodeDriver, ensure_node_packages, shared
from .node_driver import hex_or_none as _b
from .peer import (
    CommitBundle,
    EpochState,
    Member,
    PeerUnsupported,
    PublicGroupState,
    Received,
)
from .wire import message_group_id

DRIVER_DIR = Path(__file__).resolve().parent / "corecrypto"
PACKAGE_DIR = DRIVER_DIR / "node_modules" / "@wireapp" / "core-crypto"
# core-crypto's exportSecretKey is MLS-Exporter with this fixed label and an empty context.
EXPORTER_LABEL = b"exporter"
EXPORTER_CONTEXT = b""
EXPORTER_LENGTH = 32
DOMAIN = "roost.test"


def ensure_installed() -> None:
    """Fail with a clear message unless Node, core-crypto and playwright-core (for the browser
    test) are installed (``npm ci`` on first use)."""
    ensure_node_packages("core-crypto", DRIVER_DIR, ("@wireapp/core-crypto", "playwright-core"))


class CoreCryptoDriver(NodeDriver):
    """One ``node corecrypto/driver.mjs`` subprocess."""

    def __init__(self) -> None:
        ensure_installed()
        super().__init__("core-crypto", DRIVER_DIR)


def shared_driver() -> CoreCryptoDriver:
    return shared(CoreCryptoDriver)


_devices = itertools.count(1)


def _bundle(result: dict[str, Any]) -> CommitBundle:
    # ratchet_tree_type 1 ("Full"): the GroupInfo carries the whole tree in its extension, so
    # no separate tree travels (joiners take it from the GroupInfo or the Welcome).
    return CommitBundle(
        commit=bytes.fromhex(result["commit"]),
        welcome=_b(result["welcome"]),
        group_info=_b(result["group_info"]),
        ratchet_tree=None,
        epoch=result["epoch"],
    )


class CoreCryptoPeer:
    """One core-crypto client: basic credential, cipher suite 1, in-memory keystore.

    ``identity`` names the client for test output; its MLS identity (``self.identity``) is
    the Wire client id core-crypto requires, derived from it."""

    implementation = "core-crypto"

    def __init__(self, identity: bytes, driver: CoreCryptoDriver | None = None) -> None:
        self.name = f"core-crypto:{identity.decode(errors='replace')}"
        self._driver = driver or shared_driver()
        device = next(_devices)
        self._client = f"{identity.hex()}#{device}"
        r = self._driver.request(
            "new_client",
            client=self._client,
            user_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"roost:{identity.hex()}")),
            device=device,
            domain=DOMAIN,
        )
        self.identity = bytes.fromhex(r["identity"])

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        return self._driver.request(op, client=self._client, **args)

    def key_package(self) -> bytes:
        return bytes.fromhex(self._call("key_package")["key_package"])

    def create_group(
        self, group_id: bytes, *, external_sender_key: bytes | None = None
    ) -> PublicGroupState:
        """No GroupInfo or tree at epoch 0: core-crypto only hands them out with commits."""
        key = None if external_sender_key is None else external_sender_key.hex()
        self._call("create_group", group_id=group_id.hex(), external_sender_key=key)
        return PublicGroupState(None, b"")

    def add_members(self, group_id: bytes, key_packages: list[bytes]) -> CommitBundle:
        kps = [kp.hex() for kp in key_packages]
        return _bundle(self._call("add_members", group_id=group_id.hex(), key_packages=kps))

    def join(self, welcome: bytes, ratchet_tree: bytes | None = None) -> bytes:
        """core-crypto takes the tree from the Welcome only; an out-of-band one is unusable."""
        if ratchet_tree is not None:
            raise PeerUnsupported("core-crypto cannot take a ratchet tree out of band")
        return bytes.fromhex(self._call("join", welcome=welcome.hex())["group_id"])

    def join_external(
        self, group_info: bytes, ratchet_tree: bytes | None = None
    ) -> tuple[bytes, CommitBundle]:
        if ratchet_tree is not None:
            raise PeerUnsupported("core-crypto needs the ratchet tree inside the GroupInfo")
        r = self._call("join_external", group_info=group_info.hex())
        return bytes.fromhex(r["group_id"]), _bundle(r)

    def process(self, message: bytes) -> Received:
        # core-crypto's decryptMessage needs the conversation id; take it from the header.
        group_id = message_group_id(message)
        r = self._call("process", group_id=group_id.hex(), message=message.hex())
        return Received(
            kind=r["kind"],
            group_id=group_id,
            epoch=r["epoch"],
            data=_b(r["data"]),
            removed=r["removed"],
        )

    def encrypt(self, group_id: bytes, plaintext: bytes) -> bytes:
        r = self._call("encrypt", group_id=group_id.hex(), plaintext=plaintext.hex())
        return bytes.fromhex(r["message"])

    def self_update(self, group_id: bytes) -> CommitBundle:
        return _bundle(self._call("self_update", group_id=group_id.hex()))

    def remove(self, group_id: bytes, leaf_index: int) -> CommitBundle:
        raise PeerUnsupported("core-crypto removes members by client id, not leaf index")

    def remove_identity(self, group_id: bytes, identity: bytes) -> CommitBundle:
        """Commit removing the member whose basic credential identity is ``identity``."""
        return _bundle(self._call("remove", group_id=group_id.hex(), identity=identity.hex()))

    def commit_pending(self, group_id: bytes) -> CommitBundle:
        return _bundle(self._call("commit_pending", group_id=group_id.hex()))

    def export_group_info(self, group_id: bytes) -> PublicGroupState:
        raise PeerUnsupported("core-crypto hands out a GroupInfo only inside a commit bundle")

    def state(self, group_id: bytes) -> EpochState:
        """``exporter`` is core-crypto's exportSecretKey: MLS-Exporter("exporter", "")."""
        r = self._call("state", group_id=group_id.hex(), exporter_length=EXPORTER_LENGTH)
        members = tuple(Member(-1, bytes.fromhex(m), b"") for m in r["members"])
        return EpochState(
            group_id=group_id,
            epoch=r["epoch"],
            exporter=bytes.fromhex(r["exporter"]),
            members=members,
        )


def wire_client_id(name: bytes, device: int = 1) -> bytes:
    """A Wire client id for ``name``: core-crypto refuses group members whose basic
    credential identity is not of the form ``<user uuid>:<device hex>@<domain>``."""
    user = uuid.uuid5(uuid.NAMESPACE_URL, f"roost:{name.hex()}")
    return f"{user}:{device:x}@{DOMAIN}".encode()
