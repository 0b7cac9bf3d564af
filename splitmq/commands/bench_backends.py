"""`splitmq bench backends`: eager PyTorch against ONNX Runtime (and OpenVINO where installed),
side by side in one run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from splitmq.reports import add_json_option, prints_json, write_report
from splitmq_base.cli import positive_int
from splitting.registry import DEFAULT_MODEL


def register(subparsers: Any) -> None:
    from splitmq.bench.backends import __doc__ as doc

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "backends",
        help="eager PyTorch against ONNX Runtime: local run, tail throughput, agreement",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--calls", type=positive_int, default=20, help="timed calls per round")
    parser.add_argument("--batch", type=positive_int, default=8, help="the batched tail's size")
    parser.add_argument("--export-dir", type=Path, default=None, help="where builds are kept")
    parser.add_argument(
        "--no-openvino",
        dest="openvino",
        action="store_false",
        help="leave OpenVINO out even where it is installed",
    )
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.backends import BackendBenchOptions, format_report, run_backend_bench

    options = BackendBenchOptions(
        model=args.model,
        rounds=args.rounds,
        calls=args.calls,
        batch=args.batch,
        export_dir=args.export_dir,
        openvino=args.openvino,
    )
    report = run_backend_bench(options)
    if not prints_json(args.json_path):
        print(format_report(report))
    write_report(report, args.json_path)
    return 0
