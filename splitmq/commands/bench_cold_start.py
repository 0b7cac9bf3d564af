"""`splitmq bench cold-start`: devices started against a worker started a moment earlier."""

from __future__ import annotations

import argparse
from typing import Any

from splitmq.reports import add_json_option, prints_json, write_report


def register(subparsers: Any) -> None:
    from splitmq.bench.cold_start import __doc__ as doc

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "cold-start",
        help="a fresh worker and fresh devices: the request at which each first offloads",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--requests", type=int, default=10, help="per device")
    parser.add_argument("--head-start", type=float, default=1.0, help="worker's lead, seconds")
    parser.add_argument("--busy-cores", type=int, default=0, help="CPU-bound processes beside")
    parser.add_argument("--slowdown", type=float, default=4.0, help="device compute stretch")
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.cold_start import ColdStartOptions, format_report, run_cold_start_bench

    options = ColdStartOptions(
        devices=args.devices,
        requests=args.requests,
        head_start_s=args.head_start,
        busy_cores=args.busy_cores,
        slowdown=args.slowdown,
    )
    result = run_cold_start_bench(options)
    if not prints_json(args.json_path):
        print(format_report(result))
    write_report(result, args.json_path)
    return 0
