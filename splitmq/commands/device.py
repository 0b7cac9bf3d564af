"""`splitmq device --config FILE`: the same as the `device-node` command."""

from __future__ import annotations

import argparse
from typing import Any

from device_node import cli


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "device", help="run a device node (same as `device-node`)"
    )
    cli.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return cli.run(args)
