"""`splitmq` command line: one subcommand per module in `splitmq.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"splitmq.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"splitmq.commands.{name}":
                continue  # not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
