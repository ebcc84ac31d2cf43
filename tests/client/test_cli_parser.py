"""The ``roost`` argument parser: client options before or after the command."""

from __future__ import annotations

import pytest

from roost.cli.main import build_parser, main


@pytest.mark.parametrize(
    "argv, home, server, as_json",
    [
        (["--home", "A", "whoami"], "A", None, False),
        (["whoami", "--home", "B", "--json"], "B", None, True),
        (["--json", "--server", "S", "lookup", "x@y", "--home", "C"], "C", "S", True),
        (["whoami"], None, None, False),
    ],
)
def test_client_options_anywhere(argv, home, server, as_json):
    args = build_parser().parse_args(argv)
    assert (args.home, args.server, args.json) == (home, server, as_json)


def test_missing_state_is_a_clear_error(tmp_path, capsys):
    assert main(["whoami", "--home", str(tmp_path / "none")]) == 1
    assert "no client state" in capsys.readouterr().err
