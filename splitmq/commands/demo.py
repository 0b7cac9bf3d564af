"""`splitmq demo`: embedded broker + one edge worker + N device nodes on real sample images."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from device_node.config import TENSOR_CODECS
from splitmq.reports import add_json_option, prints_json, write_report
from splitmq_base.cli import EXIT_INTERRUPTED, add_verbosity


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run a broker, an edge worker and N device nodes; print a live table and a summary",
    )
    parser.add_argument("--devices", type=int, default=2, help="device nodes (default 2)")
    parser.add_argument("--requests", type=int, default=20, help="requests per device")
    parser.add_argument("--split", type=int, help="fixed split k (implies --policy fixed)")
    parser.add_argument(
        "--policy",
        choices=("fixed", "dynamic"),
        help="dynamic (default; the chooser) or fixed (--split, else the best bottleneck)",
    )
    parser.add_argument("--codec", choices=TENSOR_CODECS, default="int5", help="intermediate codec")
    parser.add_argument("--model", default="efficientnet-lite0", help="registered model name")
    parser.add_argument("--trace", type=Path, help="mahimahi uplink trace to shape each device")
    parser.add_argument("--deadline-ms", type=float, default=5000.0, help="fallback deadline")
    parser.add_argument("--rate", dest="rate_hz", type=float, help="requests/s per device")
    parser.add_argument(
        "--slowdown", type=float, help="device compute stretch (default 4: a weak device)"
    )
    parser.add_argument("--max-batch", type=int, default=8, help="worker batch limit")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default 1: devices run as profiled, on one core each)",
    )
    add_json_option(parser, what="summary")
    add_verbosity(parser)  # -q: summary only, no live table
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.demo import (
        DemoOptions,
        format_summary,
        run_demo,
        summarize,
    )

    given = {
        "devices": args.devices,
        "requests": args.requests,
        "split": args.split,
        "policy": args.policy or ("fixed" if args.split is not None else "dynamic"),
        "codec": args.codec,
        "model": args.model,
        "trace": args.trace,
        "deadline_ms": args.deadline_ms,
        "rate_hz": args.rate_hz,
        "slowdown": args.slowdown,
        "max_batch": args.max_batch,
        "torch_threads": args.threads,
        "quiet": bool(args.quiet),
    }
    # Flags left out keep DemoOptions' defaults.
    options = DemoOptions(**{k: v for k, v in given.items() if v is not None})
    # With the JSON on stdout, the live table and the progress lines go to stderr.
    demo_run = run_demo(options, out=sys.stderr if prints_json(args.json_path) else None)
    summary = summarize(demo_run)
    if not prints_json(args.json_path):
        print(format_summary(summary))
    write_report(summary, args.json_path, what="summary written")
    if demo_run.interrupted:
        print("splitmq demo: interrupted", file=sys.stderr)
        # Everything is stopped and reported. Leave without the interpreter's teardown: after
        # an interrupt, a native thread's destructor there was seen to abort (SIGABRT, once in
        # four runs) and turn a clean exit into a crash report.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    return 0 if summary["lost"] == 0 and not summary["duplicates"] else 1
