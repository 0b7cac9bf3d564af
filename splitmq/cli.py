"""`splitmq` command line: one subcommand per module in `splitmq.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from splitmq.commands import register_modules

# Modules under splitmq.commands, in the order `--help` lists them.
COMMAND_MODULES = (
    "profile",
    "bench",
    "broker",
    "worker",
    "device",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitmq", description="Dynamic split computing over MQTT."
    )
    register_modules(parser.add_subparsers(dest="command", required=True), COMMAND_MODULES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
