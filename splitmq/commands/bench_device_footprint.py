"""`splitmq bench device-footprint`: a torch-free device's disk, first answer and memory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from splitmq.reports import add_json_option, prints_json, write_report
from splitmq_base.cli import positive_int


def register(subparsers: Any) -> None:
    from splitmq.bench.device_footprint import __doc__ as doc

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "device-footprint",
        help="a torch-free device venv: its size, first result time and peak memory",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=positive_int, default=100)
    parser.add_argument("--venv", type=Path, default=None, help="reuse this device venv")
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.device_footprint import (
        FootprintOptions,
        format_report,
        run_device_footprint,
    )

    report = run_device_footprint(FootprintOptions(requests=args.requests, venv=args.venv))
    if not prints_json(args.json_path):
        print(format_report(report))
    write_report(report, args.json_path)
    return 0
