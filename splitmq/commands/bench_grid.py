"""`splitmq bench grid`: natural bottlenecks and the dynamic-split gain, data rate x batch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from splitmq.bench.grid import DEFAULT_SLOWDOWN
from splitmq.bench.grid import __doc__ as grid_doc
from splitmq.reports import add_json_option, prints_json, write_report
from splitting.reference import DEFAULT_SERVER_PROFILE


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "grid",
        help="natural bottlenecks and the dynamic-split gain over data rate x server batch",
        description=grid_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", action="append", required=True, help="repeatable")
    add_json_option(parser)
    parser.add_argument("--plots", metavar="DIR", help="write a heatmap PNG per model here")
    parser.add_argument(
        "--slowdown",
        type=float,
        default=DEFAULT_SLOWDOWN,
        help="device compute = this host's times this factor",
    )
    parser.add_argument(
        "--server-profile",
        metavar="PATH",
        default=str(DEFAULT_SERVER_PROFILE),
        help="measured server profile (default: the shipped H200 profile)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=30, help="largest server batch of the grid"
    )
    parser.add_argument("--points", type=int, default=32, help="rates per range")
    parser.add_argument("--cache-dir", metavar="DIR", help="profile cache (default: splitmq's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.grid import GridOptions, format_summary, run_grid_bench

    # A splitmq error (a bad profile or model) propagates to the CLI's `guarded`: one line
    # on stderr and its exit code.
    options = GridOptions(
        models=tuple(args.model),
        slowdown=args.slowdown,
        server_profile=Path(args.server_profile),
        max_batch=args.max_batch,
        points=args.points,
        cache_dir=None if args.cache_dir is None else Path(args.cache_dir),
        plots=None if args.plots is None else Path(args.plots),
    )
    report = run_grid_bench(options)
    write_report(report, args.json_path)
    if not prints_json(args.json_path):
        print(format_summary(report))
    return 0
