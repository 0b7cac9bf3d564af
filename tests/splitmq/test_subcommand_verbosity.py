"""-v/-q work on every command, before or after a sub-subcommand's name."""

from __future__ import annotations

import pytest

from splitmq.cli import build_parser


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["homeassistant", "remove", "-v", "n1"], 1, 0),
        (["homeassistant", "-v", "remove", "n1"], 1, 0),
        (["homeassistant", "remove", "-q", "n1"], 0, 1),
        (["homeassistant", "remove", "n1"], 0, 0),
        (["config", "check", "-q", "f.yaml"], 0, 1),
        (["config", "example", "device", "-v"], 1, 0),
        (["broker", "init", "site", "-vv"], 2, 0),
        (["monitor", "-q"], 0, 1),
    ],
)
def test_verbosity_flags_are_parsed_wherever_they_stand(
    argv: list[str], verbose: int, quiet: int
) -> None:
    args = build_parser(argv).parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)
