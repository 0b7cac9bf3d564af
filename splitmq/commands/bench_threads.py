"""`splitmq bench threads`: a paced device's forward on one thread against torch's default."""

from __future__ import annotations

import argparse
from typing import Any

from splitmq.reports import add_json_option, prints_json, write_report
from splitmq_base.cli import positive_int


def register(subparsers: Any) -> None:
    from splitmq.bench.threads import __doc__ as doc

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "threads",
        help="a paced device's forward on one torch thread against torch's default",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="efficientnet-lite0", help="a model name or file")
    parser.add_argument("--rounds", type=positive_int, default=5, help="alternations")
    parser.add_argument("--calls", type=positive_int, default=10, help="calls per round")
    parser.add_argument("--pace-ms", type=float, default=200.0, help="pause before each call")
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.threads import ThreadsOptions, format_report, run_threads_bench

    options = ThreadsOptions(
        model=args.model, rounds=args.rounds, calls=args.calls, pace_ms=args.pace_ms
    )
    report = run_threads_bench(options)
    if not prints_json(args.json_path):
        print(format_report(report))
    write_report(report, args.json_path)
    return 0
