"""`splitmq bench fleet --devices N --rate R --duration S --json PATH`: a fleet of light
devices against one worker; latency as a ratio to a bare paho ping-pong in the same run."""

from __future__ import annotations

import argparse
from typing import Any

from splitmq.reports import add_json_option, prints_json, write_report


def register(subparsers: Any) -> None:
    from splitmq.bench.fleet import __doc__ as doc

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "fleet",
        help="N light devices x R req/s against one worker: latency, lost, rejected",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2.0, help="requests/s per device")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--max-batch", type=int, default=8, help="the worker's max_batch")
    parser.add_argument(
        "--max-held-bytes", type=int, help='the worker\'s bound: past it, "rejected"'
    )
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.fleet import FleetOptions, format_report, run_fleet_bench

    options = FleetOptions(
        devices=args.devices,
        rate_hz=args.rate,
        duration_s=args.duration,
        max_batch=args.max_batch,
        max_held_bytes=args.max_held_bytes,
    )
    result = run_fleet_bench(options)
    if not prints_json(args.json_path):
        print(format_report(result))
    write_report(result, args.json_path)
    return 0 if result.lost == 0 and result.duplicates == 0 else 1
