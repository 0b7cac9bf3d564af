"""`splitmq bench chooser`: the dynamic chooser against fixed splits and the hindsight oracle."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from schemas.codecs import INPUT_CODECS
from splitmq.bench.chooser import (
    DEFAULT_BENCH_CODECS,
    DEFAULT_LOAD,
    DEFAULT_MODEL,
    DEFAULT_RATE_HZ,
    ChooserOptions,
    bench,
    print_table,
)
from splitmq.bench.chooser import __doc__ as chooser_doc
from splitmq.reports import add_json_option, prints_json, write_report
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
    add_json_option(parser, what="results, development targets included")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, help="requests/s")
    _add_device_flags(parser)
    _add_codec_flags(parser)
    _add_profile_flags(parser)
    _add_simulation_flags(parser)
    parser.add_argument("--plots", metavar="DIR", help="write one PNG per trace here")
    parser.set_defaults(func=run)


def _add_device_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default=DEFAULT_DEVICE_CLASS,
        choices=[*DEVICE_CLASSES, MEASURED_HERE],
        help=f"reference device class shipped with the package (default {DEFAULT_DEVICE_CLASS}),"
        " or 'here': profile the model on this host and apply --slowdown",
    )
    parser.add_argument(
        "--device-backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="what the shipped device class runs its heads on (onnxruntime: its shipped "
        "profile, and the class's hardware as much faster as `bench backends` measured)",
    )
    parser.add_argument(
        "--slowdown",
        type=float,
        default=DEFAULT_SLOWDOWN,
        help="with --device here or --device-profile: device vs one core of the profiling host",
    )
    parser.add_argument(
        "--device-profile", metavar="PATH", help="ModelProfile JSON (default: measure here)"
    )


def _add_codec_flags(parser: argparse.ArgumentParser) -> None:
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


def _add_profile_flags(parser: argparse.ArgumentParser) -> None:
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


def _add_simulation_flags(parser: argparse.ArgumentParser) -> None:
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


def options_from(args: argparse.Namespace) -> ChooserOptions:
    """The run's options, from the parsed flags."""
    return ChooserOptions(
        traces=tuple(Path(t) for t in args.trace),
        model=args.model,
        load=args.load,
        rate_hz=args.rate,
        device=args.device,
        device_backend=args.device_backend,
        slowdown=args.slowdown,
        min_agreement=args.min_agreement,
        codecs=tuple(args.codecs),
        input_codec=args.input_codec,
        server_profile=_path(args.server_profile),
        measure_server_profile=_path(args.measure_server_profile),
        device_profile=_path(args.device_profile),
        duration_s=args.duration,
        one_way_ms=args.one_way_ms,
        arrivals=args.arrivals,
        seed=args.seed,
        plots=_path(args.plots),
    )


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def run(args: argparse.Namespace) -> int:
    if args.plots and importlib.util.find_spec("matplotlib") is None:  # before minutes of work
        print(
            "splitmq bench chooser: --plots needs matplotlib: pip install 'splitmq[bench]'",
            file=sys.stderr,
        )
        return 2
    try:
        report = bench(options_from(args), quiet=bool(getattr(args, "quiet", False)))
    except SplitmqError as exc:
        print(f"splitmq bench chooser: {exc}", file=sys.stderr)
        return 2
    if not prints_json(args.json_path):
        print_table(report)
    write_report(report, args.json_path)
    return 0
