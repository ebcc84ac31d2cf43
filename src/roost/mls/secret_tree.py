"""The secret tree and its hash ratchets (RFC 9420 section 9), one per epoch.

- ``SecretTree(cs, encryption_secret, n_leaves)``: node secrets are derived lazily from the
  root and each parent secret is deleted as soon as both children exist (section 9.1),
  leaf secrets once their two ratchets exist.
- ``tree.ratchet(leaf, content_type)``: the application ratchet for application data, the
  handshake ratchet for proposals and commits.
- Sending: ``ratchet.next() -> (generation, key, nonce)``.
- Receiving: ``ratchet.get(generation) -> (key, nonce)`` (out of order within a window;
  skipped keys are kept, older ones dropped), then ``ratchet.consume(generation)`` once the
  message decrypted, so that a forged message cannot burn a key.
- ``sender_data_key_nonce(cs, sender_data_secret, ciphertext)`` (section 6.3.2).
- Persistence: ``tree.encode_state() -> bytes`` and ``SecretTree.decode_state(cs, data)``
  (remaining node secrets, both ratchets of each initialised leaf, skipped keys).
Errors are ``ValidationError`` (unknown leaf, generation consumed or out of the window).
"""

from __future__ import annotations

from . import tree_math
from .codec import Reader, Writer
from .constants import ContentType
from .crypto.ciphersuite import CipherSuite
from .errors import ValidationError

DEFAULT_WINDOW = 1000  # generations kept behind / allowed ahead of the newest one


class HashRatchet:
    """One chain of (key, nonce) per generation, with a bounded store of skipped keys."""

    __slots__ = ("_cs", "_secret", "next_generation", "_skipped", "_window")

    def __init__(self, cs: CipherSuite, secret: bytes, window: int = DEFAULT_WINDOW) -> None:
        self._cs = cs
        self._secret: bytes | None = secret
        self.next_generation = 0
        # generation -> (key, nonce), insertion order == generation order.
        self._skipped: dict[int, tuple[bytes, bytes]] = {}
        self._window = window

    def _step(self) -> tuple[int, bytes, bytes]:
        cs, secret, gen = self._cs, self._secret, self.next_generation
        if secret is None or gen >= 0xFFFFFFFF:
            raise ValidationError("hash ratchet exhausted")
        key, nonce, self._secret = cs.ratchet_step(secret, gen)
        self.next_generation = gen + 1
        return gen, key, nonce

    def next(self) -> tuple[int, bytes, bytes]:
        """Key and nonce for the next generation, for sending; the secret moves on."""
        return self._step()

    def get(self, generation: int) -> tuple[bytes, bytes]:
        """Key and nonce of ``generation`` for receiving (not yet consumed)."""
        kn = self._skipped.get(generation)
        if kn is not None:
            return kn
        if generation < self.next_generation:
            raise ValidationError(f"generation {generation} already used or too old")
        if generation - self.next_generation >= self._window:
            raise ValidationError(
                f"generation {generation} is too far ahead (next is {self.next_generation})"
            )
        while True:
            gen, key, nonce = self._step()
            self._skipped[gen] = (key, nonce)
            if gen == generation:
                break
        self._evict()
        return key, nonce

    def consume(self, generation: int) -> None:
        """Delete the key of ``generation`` (forward secrecy after successful decryption)."""
        self._skipped.pop(generation, None)

    def write_state(self, w: Writer) -> None:
        w.optional(self._secret, Writer.opaque)
        w.u32(self.next_generation)
        w.u32(self._window)
        w.u32(len(self._skipped))
        for gen, (key, nonce) in self._skipped.items():
            w.u32(gen)
            w.opaque(key)
            w.opaque(nonce)

    @classmethod
    def read_state(cls, r: Reader, cs: CipherSuite) -> HashRatchet:
        secret = r.optional(Reader.opaque)
        ratchet = cls(cs, b"", 1)
        ratchet._secret = secret
        ratchet.next_generation = r.u32()
        ratchet._window = r.u32()
        for _ in range(r.u32()):
            gen = r.u32()
            ratchet._skipped[gen] = (r.opaque(), r.opaque())
        return ratchet

    def _evict(self) -> None:
        skipped = self._skipped
        oldest_allowed = self.next_generation - self._window
        if len(skipped) <= self._window and next(iter(skipped)) >= oldest_allowed:
            return  # the common case: nothing to drop
        while skipped:
            first = next(iter(skipped))
            if first >= oldest_allowed and len(skipped) <= self._window:
                break
            del skipped[first]


class SecretTree:
    __slots__ = ("_cs", "n_leaves", "_nodes", "_handshake", "_application", "_window")

    def __init__(
        self,
        cs: CipherSuite,
        encryption_secret: bytes,
        n_leaves: int,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if n_leaves < 1:
            raise ValueError("a secret tree needs at least one leaf")
        self._cs = cs
        self.n_leaves = n_leaves
        self._nodes: dict[int, bytes] = {tree_math.root(n_leaves): encryption_secret}
        self._handshake: dict[int, HashRatchet] = {}
        self._application: dict[int, HashRatchet] = {}
        self._window = window

    def _init_leaf(self, leaf: int) -> None:
        if not 0 <= leaf < self.n_leaves:
            raise ValidationError(f"leaf {leaf} is outside a tree of {self.n_leaves} leaves")
        cs, nodes, n = self._cs, self._nodes, self.n_leaves
        target = tree_math.leaf_to_node(leaf)
        # Walk up to the lowest ancestor whose secret we still hold, then derive down.
        path = [target]
        x = target
        while x not in nodes:
            if x == tree_math.root(n):
                raise ValidationError(f"secrets of leaf {leaf} are no longer available")
            x = tree_math.parent(x, n)
            path.append(x)
        nh = cs.hash_len
        for x in reversed(path[1:]):
            left, right = cs.expand_with_labels(
                nodes.pop(x), (b"tree", b"left", nh), (b"tree", b"right", nh)
            )
            nodes[tree_math.left(x)] = left
            nodes[tree_math.right(x)] = right
        handshake, application = cs.expand_with_labels(
            nodes.pop(target), (b"handshake", b"", nh), (b"application", b"", nh)
        )
        self._handshake[leaf] = HashRatchet(cs, handshake, self._window)
        self._application[leaf] = HashRatchet(cs, application, self._window)

    def encode_state(self) -> bytes:
        w = Writer()
        w.u32(self.n_leaves)
        w.u32(self._window)
        w.u32(len(self._nodes))
        for node in sorted(self._nodes):
            w.u32(node)
            w.opaque(self._nodes[node])
        for ratchets in (self._handshake, self._application):
            w.u32(len(ratchets))
            for leaf in sorted(ratchets):
                w.u32(leaf)
                ratchets[leaf].write_state(w)
        return w.getvalue()

    @classmethod
    def decode_state(cls, cs: CipherSuite, data: bytes) -> SecretTree:
        """Inverse of ``encode_state``; raises ``DecodeError`` on malformed input."""
        r = Reader(data)
        tree = cls(cs, b"", max(1, r.u32()), r.u32())
        tree._nodes = {}
        for _ in range(r.u32()):
            node = r.u32()
            tree._nodes[node] = r.opaque()
        for ratchets in (tree._handshake, tree._application):
            for _ in range(r.u32()):
                leaf = r.u32()
                ratchets[leaf] = HashRatchet.read_state(r, cs)
        r.finish()
        return tree

    @property
    def held_node_secrets(self) -> int:
        """How many tree-node secrets are still stored (forward-secrecy bookkeeping)."""
        return len(self._nodes)

    def handshake_ratchet(self, leaf: int) -> HashRatchet:
        r = self._handshake.get(leaf)
        if r is None:
            self._init_leaf(leaf)
            r = self._handshake[leaf]
        return r

    def application_ratchet(self, leaf: int) -> HashRatchet:
        r = self._application.get(leaf)
        if r is None:
            self._init_leaf(leaf)
            r = self._application[leaf]
        return r

    def ratchet(self, leaf: int, content_type: ContentType) -> HashRatchet:
        if content_type == ContentType.APPLICATION:
            return self.application_ratchet(leaf)
        return self.handshake_ratchet(leaf)


def sender_data_key_nonce(
    cs: CipherSuite, sender_data_secret: bytes, ciphertext: bytes
) -> tuple[bytes, bytes]:
    """Key and nonce that protect SenderData, bound to a sample of the content ciphertext."""
    sample = ciphertext[: cs.hash_len]
    key = cs.expand_with_label(sender_data_secret, b"key", sample, cs.aead_key_len)
    nonce = cs.expand_with_label(sender_data_secret, b"nonce", sample, cs.aead_nonce_len)
    return key, nonce
