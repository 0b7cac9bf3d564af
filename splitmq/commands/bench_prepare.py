"""`splitmq bench prepare`: split 0's integer resize against Pillow's, speed and pixels."""

from __future__ import annotations

import argparse
from typing import Any

from splitmq.reports import add_json_option, prints_json, write_report
from splitmq_base.cli import positive_int


def register(subparsers: Any) -> None:
    from splitmq.bench.prepare import __doc__ as doc

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "prepare",
        help="FORMAT.md's prepare recipe (numpy) against Pillow's BILINEAR: ms, pixels, top-1",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=positive_int, default=5, help="runs per image")
    parser.add_argument(
        "--enlarge",
        type=positive_int,
        default=3,
        help="also time the photos this many times larger",
    )
    parser.add_argument(
        "--no-model", action="store_true", help="skip lite0's top-1 agreement (no torch needed)"
    )
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.prepare import PrepareOptions, format_report, run_prepare_bench

    options = PrepareOptions(
        repeats=args.repeats,
        enlarge=args.enlarge,
        model=None if args.no_model else "efficientnet-lite0",
    )
    report = run_prepare_bench(options)
    if not prints_json(args.json_path):
        print(format_report(report))
    write_report(report, args.json_path)
    return 0
