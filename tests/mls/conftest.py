"""Per-file summary of the official MLS test vectors: how many cases each file has, and how
many of them every test that uses them passed (printed at the end of the run)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from .vectors import load

_case_of: dict[str, tuple[str, int]] = {}
_outcomes: dict[tuple[str, int], set[str]] = defaultdict(set)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mls_vector(name, index): an official test vector case")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        mark = item.get_closest_marker("mls_vector")
        if mark is not None:
            _case_of[item.nodeid] = (mark.args[0], mark.args[1])


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    case = _case_of.get(report.nodeid)
    if case is None:
        return
    if report.failed:
        _outcomes[case].add("failed")
    elif report.skipped:
        _outcomes[case].add("skipped")
    elif report.when == "call":
        _outcomes[case].add("passed")


def pytest_terminal_summary(terminalreporter) -> None:
    names = sorted({name for name, _ in _outcomes})
    if not names:
        return
    tr = terminalreporter
    tr.section("MLS test vectors (cases per file)")
    tr.write_line(f"{'file':40} {'cases':>6} {'passed':>7} {'failed':>7} {'skipped':>8}")
    for name in names:
        total = len(load(name))
        seen = [_outcomes.get((name, i), set()) for i in range(total)]
        failed = sum(1 for o in seen if "failed" in o)
        skipped = sum(1 for o in seen if "skipped" in o and "failed" not in o)
        passed = sum(1 for o in seen if o == {"passed"})
        tr.write_line(f"{name + '.json':40} {total:>6} {passed:>7} {failed:>7} {skipped:>8}")
