"""The ``roost`` argument parser: client options before or after the command."""

from __future__ import annotations

import pytest

from roost.cli.commands import build_parser
from roost.cli.main import main
from roost.cli.operator import operator_parser


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


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["serve", "--config", "r.toml"],
        ["db", "upgrade", "--config", "r.toml"],
        ["registration-token", "create", "--uses", "3", "--ttl-seconds", "60"],
        ["registration-token", "create", "--unlimited"],
    ],
)
def test_operator_commands_parse_alike_without_the_client_parser(argv):
    """The entry point parses these alone (no client library); same result as the full one."""
    fast, full = vars(operator_parser().parse_args(argv)), vars(build_parser().parse_args(argv))
    for client_option in ("home", "server", "json"):
        assert full.pop(client_option) in (None, False)
    assert fast == full
