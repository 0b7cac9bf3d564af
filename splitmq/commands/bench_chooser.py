"""`splitmq bench chooser`: the dynamic chooser against fixed splits and the hindsight oracle.

For each uplink trace (mahimahi format), it simulates a device (the model's profile measured on
this host with one thread, times the slowdown), its uplink (the trace: 1500-byte delivery
opportunities, FIFO, plus a one-way delay each way) and an edge server (the server profile under
a load scenario, reporting telemetry every second) and runs every strategy through the same
system, fallback included: local, offload (split 0), every fixed split, static_best (the best
fixed split in hindsight), neurosurgeon (last observed rate, server taken as idle), dynamic (the
device node's default policy) and oracle (per request, the split that actually finished first).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from splitmq.errors import SplitmqError
from splitmq.sim.inputs import (
    DEFAULT_SERVER_PROFILE,
    default_duration_s,
    device_profile,
    read_trace,
    server_profile,
)
from splitmq.sim.plots import plot_trace
from splitmq.sim.runner import ARRIVALS, SimSettings, Simulation
from splitmq.sim.scenarios import SCENARIOS, make_load
from splitmq.sim.strategies import TraceResult, evaluate
from splitting.errors import SplittingError
from splitting.latency import DEFAULT_SLOWDOWN
from splitting.server_profile import measure_server_profile
from splitting.traces import DEFAULT_ONE_WAY_MS

DEFAULT_MODEL = "efficientnet-lite0"
DEFAULT_LOAD = "switching"
DEFAULT_RATE_HZ = 2.0
MEASURED_BATCHES = (1, 2, 4, 8)
TABLE_STRATEGIES = ("oracle", "dynamic", "static_best", "neurosurgeon", "local", "offload")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "chooser",
        help="trace-driven comparison of the dynamic chooser, fixed splits and the oracle",
        description=__doc__,
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
        "--slowdown", type=float, default=DEFAULT_SLOWDOWN, help="device vs one core here"
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
    parser.add_argument("--one-way-ms", type=float, default=DEFAULT_ONE_WAY_MS)
    parser.add_argument("--arrivals", choices=ARRIVALS, default="periodic")
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


def bench(args: argparse.Namespace) -> dict[str, Any]:
    _check_positive(rate=args.rate, slowdown=args.slowdown, duration=args.duration)
    if args.measure_server_profile:
        if args.server_profile:
            raise SplitmqError("give --server-profile or --measure-server-profile, not both")
        try:
            measure_server_profile(args.model, MEASURED_BATCHES, path=args.measure_server_profile)
        except SplittingError as exc:
            raise SplitmqError(f"cannot measure a server profile: {exc}") from exc
        args.server_profile = args.measure_server_profile
    server = server_profile(args.server_profile)
    device = device_profile(args.model, slowdown=args.slowdown, path=args.device_profile)
    traces: dict[str, Any] = {}
    for trace_path in args.trace:
        trace = read_trace(trace_path)
        if trace.name in traces:
            raise SplitmqError(f"two traces named {trace.name}: rename one")
        duration = args.duration or default_duration_s(trace)
        settings = SimSettings(
            rate_hz=args.rate,
            duration_s=duration,
            one_way_ms=args.one_way_ms,
            arrivals=args.arrivals,
            seed=args.seed,
        )
        load = make_load(args.load, duration, seed=args.seed)
        started = time.perf_counter()
        sim = Simulation(device, server, trace, load, settings)
        result = evaluate(sim, server)
        entry = result.summary()
        entry["mean_mbit_s"] = trace.mean_mbit_s
        entry["duration_s"] = duration
        entry["targets"] = targets(result)
        entry["seconds"] = round(time.perf_counter() - started, 2)
        if args.plots:
            stem = Path(trace.name).stem
            entry["plot"] = str(plot_trace(sim, result, Path(args.plots) / f"chooser-{stem}.png"))
        traces[trace.name] = entry
    return {
        "model": args.model,
        "settings": {
            "load": args.load,
            "rate_hz": args.rate,
            "slowdown": args.slowdown,
            "one_way_ms": args.one_way_ms,
            "arrivals": args.arrivals,
            "seed": args.seed,
            "server_profile": str(args.server_profile or DEFAULT_SERVER_PROFILE),
            "server_device": server.device,
            "device_profile": args.device_profile or "measured here, 1 thread",
            "candidates": list(device.candidates),
            "local_ms": device.local_ms,
        },
        "traces": traces,
    }


def targets(result: TraceResult) -> dict[str, Any]:
    """The issue's targets on this trace, with the margins."""
    stats = {name: run.stats() for name, run in result.runs.items()}
    dynamic, oracle = stats["dynamic"], stats["oracle"]
    static, neuro = stats["static_best"], stats["neurosurgeon"]
    over_oracle = dynamic["mean_ms"] / oracle["mean_ms"] - 1
    return {
        "dynamic_over_oracle_pct": round(100 * over_oracle, 2),
        "within_5pct_of_oracle": over_oracle <= 0.05,
        "mean_at_or_below_static_best": dynamic["mean_ms"] <= static["mean_ms"],
        "p95_at_or_below_static_best": dynamic["p95_ms"] <= static["p95_ms"],
        "mean_below_neurosurgeon": dynamic["mean_ms"] < neuro["mean_ms"],
    }


def _check_positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise SplitmqError(f"--{name} must be a positive number, got {value}")


def print_table(report: dict[str, Any]) -> None:
    settings = report["settings"]
    print(
        f"{report['model']}, load {settings['load']}, {settings['rate_hz']:g} req/s, "
        f"slowdown {settings['slowdown']:g} (local {settings['local_ms']:.1f} ms), "
        f"one-way {settings['one_way_ms']:g} ms, server {settings['server_device']}"
    )
    for name, entry in report["traces"].items():
        print(
            f"\n{name}: {entry['mean_mbit_s']:.2f} Mbit/s mean, {entry['requests']} requests, "
            f"static_best k={entry['static_best_k']}, "
            f"oracle agreement {entry['oracle_agreement']:.3f}"
        )
        print(f"  {'strategy':14s} {'mean':>8s} {'p50':>8s} {'p95':>8s} {'p99':>8s}  fallbacks")
        for strategy in TABLE_STRATEGIES:
            s = entry["strategies"][strategy]
            fallbacks = entry["fallbacks"].get(strategy, 0)
            print(
                f"  {strategy:14s} {s['mean_ms']:8.1f} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} "
                f"{s['p99_ms']:8.1f}  {fallbacks}"
            )
        t = entry["targets"]
        print(
            f"  targets: dynamic {t['dynamic_over_oracle_pct']:+.1f}% vs oracle "
            f"(<= 5%: {_yes(t['within_5pct_of_oracle'])}), mean <= static_best: "
            f"{_yes(t['mean_at_or_below_static_best'])}, p95 <= static_best: "
            f"{_yes(t['p95_at_or_below_static_best'])}, mean < neurosurgeon: "
            f"{_yes(t['mean_below_neurosurgeon'])}"
        )


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"
