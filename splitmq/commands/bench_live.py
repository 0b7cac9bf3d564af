"""`splitmq bench live`: one trace's live mean latency against the simulator's, same settings.

Runs one device of the demo (real Mosquitto, the demo's CPU edge worker) through a trace
shaper, then the trace simulator on the same trace from the same trace time, with the same
rate, number of requests, one-way delay, slowdown, codec and policy, an idle server measured
on this host (a CPU profile of the worker's tails, cached), and reports both and the
difference of the means ((live - sim) / sim).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from splitmq.reports import add_json_option
from splitting.traces import DEFAULT_ONE_WAY_MS

DEFAULT_REQUESTS = 100
DEFAULT_RATE_HZ = 2.0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "live",
        help="live (broker + worker + shaped device) versus simulated latency on one trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--trace", type=Path, required=True, metavar="PATH", help="uplink trace")
    parser.add_argument("--policy", choices=("dynamic", "fixed"), help="default dynamic")
    parser.add_argument("--split", type=int, help="fixed split k (implies --policy fixed)")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="requests to send")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, help="requests/s")
    parser.add_argument(
        "--one-way-ms",
        type=float,
        default=DEFAULT_ONE_WAY_MS,
        help="added one-way network delay",
    )
    parser.add_argument("--slowdown", type=float, help="device compute stretch (default 4)")
    parser.add_argument(
        "--server-profile",
        type=Path,
        metavar="PATH",
        help="server profile to simulate (default: this host's CPU worker, measured and cached)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads of the device and the worker (default 1)"
    )
    parser.add_argument(
        "--cached-profile",
        action="store_true",
        help="reuse the cached device profile (default: measure it again before the run)",
    )
    add_json_option(parser, what="report")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.live import LiveBenchOptions, format_report, run_bench
    from splitmq.reports import prints_json, write_report

    given: dict[str, Any] = {
        "trace": args.trace,
        "policy": args.policy or ("fixed" if args.split is not None else "dynamic"),
        "split": args.split,
        "requests": args.requests,
        "rate_hz": args.rate,
        "one_way_ms": args.one_way_ms,
        "slowdown": args.slowdown,
        "server_profile": args.server_profile,
        "torch_threads": args.threads,
        "fresh_device_profile": not args.cached_profile,
    }
    options = LiveBenchOptions(**{k: v for k, v in given.items() if v is not None})
    report = run_bench(options)
    if not prints_json(args.json_path):
        print(format_report(report))
    write_report(report, args.json_path)
    return 0
