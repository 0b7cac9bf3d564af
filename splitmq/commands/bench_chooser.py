"""`splitmq bench chooser`: the dynamic chooser against fixed splits and the hindsight oracle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from schemas.codecs import INPUT_CODECS
from splitmq.bench.chooser import (
    DEFAULT_BENCH_CODECS,
    DEFAULT_LOAD,
    DEFAULT_MODEL,
    DEFAULT_RATE_HZ,
    bench,
    print_table,
)
from splitmq.bench.chooser import __doc__ as chooser_doc
from splitmq.sim.inputs import DEFAULT_SERVER_PROFILE, MEASURED_HERE
from splitmq.sim.runner import ARRIVALS
from splitmq.sim.scenarios import SCENARIOS
from splitmq_base.errors import SplitmqError
from splitting.latency import DEFAULT_MIN_AGREEMENT, DEFAULT_SLOWDOWN
from splitting.reference import DEFAULT_DEVICE_CLASS, DEVICE_CLASSES
from splitting.traces import DEFAULT_ONE_WAY_MS


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "chooser",
        help="trace-driven comparison of the dynamic chooser, fixed splits and the oracle",
        description=chooser_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--trace", action="append", required=True, metavar="PATH", help="mahimahi uplink trace"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    parser.add_argument("--load", default=DEFAULT_LOAD, choices=SCENARIOS, help="server load")
    parser.add_argument("--json", required=True, metavar="OUT", help="where to write results")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, help="requests/s")
    parser.add_argument(
        "--device",
        default=DEFAULT_DEVICE_CLASS,
        choices=[*DEVICE_CLASSES, MEASURED_HERE],
        help=f"reference device class shipped with the package (default {DEFAULT_DEVICE_CLASS}),"
        " or 'here': profile the model on this host and apply --slowdown",
    )
    parser.add_argument(
        "--slowdown",
        type=float,
        default=DEFAULT_SLOWDOWN,
        help="with --device here or --device-profile: device vs one core of the profiling host",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help="least top-1 agreement with the unsplit model of a usable (split, codec) pair "
        f"(default {DEFAULT_MIN_AGREEMENT}; 0 admits every pair)",
    )
    parser.add_argument(
        "--codecs",
        nargs="+",
        default=list(DEFAULT_BENCH_CODECS),
        metavar="CODEC",
        help="intermediate codecs the chooser may pick per request (default: "
        f"{' '.join(DEFAULT_BENCH_CODECS)})",
    )
    parser.add_argument(
        "--input-codec",
        default="webp",
        choices=INPUT_CODECS,
        help="split 0's image codec (webp: lossless, exact; jpeg: lossy, opt-in)",
    )
    parser.add_argument(
        "--server-profile",
        metavar="PATH",
        help=f"server profile JSON (default {DEFAULT_SERVER_PROFILE})",
    )
    parser.add_argument(
        "--measure-server-profile",
        metavar="PATH",
        help="time the model's tails on this host's CPU (batches 1, 2, 4, 8), write them to "
        "PATH and use them as the server profile (the live demo's worker runs here)",
    )
    parser.add_argument(
        "--device-profile", metavar="PATH", help="ModelProfile JSON (default: measure here)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="simulated seconds per trace (default: the trace, at least 1000; it repeats)",
    )
    parser.add_argument(
        "--one-way-ms",
        type=float,
        default=DEFAULT_ONE_WAY_MS,
        help="one-way network delay added to every transfer",
    )
    parser.add_argument(
        "--arrivals",
        choices=ARRIVALS,
        default="periodic",
        help="request arrivals: periodic or Poisson",
    )
    parser.add_argument("--seed", type=int, default=0, help="load scenario and arrivals")
    parser.add_argument("--plots", metavar="DIR", help="write one PNG per trace here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        report = bench(args)
    except SplitmqError as exc:
        print(f"splitmq bench chooser: {exc}", file=sys.stderr)
        return 2
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    print_table(report)
    print(f"\nwrote {out}")
    return 0
