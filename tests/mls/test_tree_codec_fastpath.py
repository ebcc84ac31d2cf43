"""The fast ratchet-tree array codec (``decode_tree_entries``, ``encode_ratchet_tree``) agrees
with the generic ``Node``-based one on valid trees and on mutated bytes."""

from __future__ import annotations

import random

import pytest

from roost.mls.errors import DecodeError
from roost.mls.tree_nodes import Node, decode_ratchet_tree, decode_tree_entries, encode_ratchet_tree

from .vectors import h, load


def _tree_datas() -> list[bytes]:
    return [h(c["tree"]) for c in load("tree-validation")]


def _generic(data: bytes):
    try:
        return [None if n is None else n.value for n in decode_ratchet_tree(data)]
    except DecodeError:
        return DecodeError


def _fast(data: bytes):
    try:
        return decode_tree_entries(data)
    except DecodeError:
        return DecodeError


@pytest.mark.parametrize("data", _tree_datas(), ids=lambda d: f"{len(d)}B")
def test_vector_trees_round_trip_through_both_codecs(data):
    entries = decode_tree_entries(data)
    assert entries == _generic(data)
    assert encode_ratchet_tree(entries) == data
    assert encode_ratchet_tree([None if e is None else Node.of(e) for e in entries]) == data


def test_mutated_trees_decode_alike():
    rng = random.Random(3)
    datas = _tree_datas()
    n = 0
    for _ in range(2000):
        b = bytearray(rng.choice(datas))
        op = rng.randrange(4)
        pos = rng.randrange(len(b))
        if op == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            del b[pos:]
        elif op == 2:
            b[pos] = rng.choice((0, 1, 2, 3, 0x40, 0xFF))
        else:
            b[pos:pos] = rng.randbytes(2)
        data = bytes(b)
        assert _fast(data) == _generic(data)
        n += 1
    print(f"{n} mutated trees decoded alike")
