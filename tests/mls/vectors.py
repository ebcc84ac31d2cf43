"""Locate and load the official RFC 9420 test vectors (../shared/mls-test-vectors)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def vectors_dir() -> Path:
    env = os.environ.get("ROOST_MLS_TEST_VECTORS")
    return Path(env) if env else ROOT.parent / "shared" / "mls-test-vectors"


@cache
def load(name: str) -> list[dict]:
    path = vectors_dir() / f"{name}.json"
    if not path.exists():
        pytest.fail(f"MLS test vectors not found at {path}; set ROOST_MLS_TEST_VECTORS")
    return json.loads(path.read_text())


def h(s: str | None) -> bytes:
    return bytes.fromhex(s) if s else b""


def cases(name: str, ids=None) -> list:
    """pytest params, one per case, with readable ids (the suite where there is one)."""
    data = load(name)
    out = []
    for i, case in enumerate(data):
        suite = case.get("cipher_suite")
        cid = f"{i}-suite{suite}" if suite is not None else str(i)
        mark = pytest.mark.mls_vector(name, i)
        out.append(pytest.param(case, id=ids(i, case) if ids else cid, marks=mark))
    return out
