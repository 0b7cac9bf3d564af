"""`splitmq worker`: run an edge worker (the same as the `edge-worker` command)."""

from __future__ import annotations

import argparse
from typing import Any

from edge_worker.cli import add_worker_arguments, run


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker", help="run an edge worker (subscribes per split, runs tails, replies)"
    )
    add_worker_arguments(parser)
    parser.set_defaults(func=run)
