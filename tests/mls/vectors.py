"""Locate and load the official RFC 9420 test vectors.

They are not in the repository (their source repository has no licence): see the README,
"MLS test vectors", for where they come from. Tests read them from ``$ROOST_MLS_TEST_VECTORS``
or else from ``../shared/mls-test-vectors`` beside the clone; without them the test modules
that use them fail at collection (never skip), so a run that did not check them cannot pass."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "ROOST_MLS_TEST_VECTORS"
SOURCE = (
    "the folder test-vectors/ of https://github.com/mlswg/mls-implementations "
    "at commit cfd450286d1bfd9cd2519b95c80f9771f94a5b1a"
)


def vectors_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else ROOT.parent / "shared" / "mls-test-vectors"


def missing_message(path: Path) -> str:
    """Why the run fails without the vectors, and how to provide them."""
    found_by = f"${ENV_VAR}" if os.environ.get(ENV_VAR) else f"the default, ${ENV_VAR} is unset"
    return (
        f"MLS test vector file not found: {path} (path from {found_by}). The official RFC 9420 "
        f"test vectors are not part of this repository; they are {SOURCE}. Put that folder at "
        f"../shared/mls-test-vectors beside this clone, or set {ENV_VAR} to its path. Without "
        "them the test modules that use them fail (they are never skipped), so the run fails."
    )


@cache
def load(name: str) -> list[dict]:
    path = vectors_dir() / f"{name}.json"
    if not path.exists():
        pytest.fail(missing_message(path))
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
