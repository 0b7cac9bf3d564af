"""`splitmq bench chooser`: the dynamic chooser against fixed splits and the hindsight oracle.

For each uplink trace (mahimahi format), it simulates a device (by default a reference device
class shipped with the package, so that the figures are the same on any machine; `--device here`
profiles the model on this host with one thread, times the slowdown), its uplink (the trace:
1500-byte delivery opportunities, FIFO, plus a one-way delay each way) and an edge server (the
server profile under a load scenario, reporting telemetry every second). It runs every strategy
through the same system, fallback included: local, offload (split 0), every fixed split,
static_best (the best fixed split in hindsight), neurosurgeon (last observed rate, server taken
as idle), dynamic (the device node's default policy), dynamic_race (the same, racing uncertain
offloads against the device's own tail) and oracle (per request, the split that actually
finished first).

Every strategy is held to the exact-answer rule: only (split, codec) pairs whose measured top-1
agreement with the unsplit model is at least `--min-agreement` take part.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from splitmq.sim.inputs import (
    DEFAULT_SERVER_PROFILE,
    MEASURED_HERE,
    default_duration_s,
    device_profile,
    read_trace,
    server_profile,
)
from splitmq.sim.plots import plot_trace
from splitmq.sim.runner import SimSettings, Simulation
from splitmq.sim.scenarios import make_load
from splitmq.sim.strategies import TraceResult, captured, evaluate
from splitmq_base.cli import progress_bar
from splitmq_base.errors import SplitmqError
from splitting.errors import SplittingError
from splitting.latency import DeviceProfile
from splitting.reference import DEVICE_CLASSES
from splitting.server_profile import ServerProfile, measure_server_profile
from splitting.traces import UplinkTrace

DEFAULT_MODEL = "efficientnet-lite0"
DEFAULT_LOAD = "switching"
DEFAULT_RATE_HZ = 2.0
MEASURED_BATCHES = (1, 2, 4, 8)
TABLE_STRATEGIES = (
    "oracle",
    "dynamic",
    "dynamic_race",
    "dynamic_race_always",
    "dynamic_knows_past",
    "static_best",
    "neurosurgeon",
    "local",
    "offload",
)
#: The chooser may take int5 when the uplink is starved and int8 when it is not, where both
#: pass the agreement floor; lossless (exact, large) where neither does.
DEFAULT_BENCH_CODECS = ("int5", "int8", "lossless")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    _check_positive(rate=args.rate, slowdown=args.slowdown, duration=args.duration)
    if not 0 <= args.min_agreement <= 1:
        raise SplitmqError(f"--min-agreement must be in [0, 1], got {args.min_agreement}")
    if args.measure_server_profile:
        if args.server_profile:
            raise SplitmqError("give --server-profile or --measure-server-profile, not both")
        try:
            measure_server_profile(args.model, MEASURED_BATCHES, path=args.measure_server_profile)
        except SplittingError as exc:
            raise SplitmqError(f"cannot measure a server profile: {exc}") from exc
        args.server_profile = args.measure_server_profile
    server = server_profile(args.server_profile)
    device = device_profile(
        args.model,
        device_class=args.device,
        slowdown=args.slowdown,
        path=args.device_profile,
        codec=args.codecs[0],
        codecs=tuple(args.codecs),
        input_codec=args.input_codec,
        min_agreement=args.min_agreement,
    )
    traces: dict[str, Any] = {}
    quiet = getattr(args, "quiet", False)
    with progress_bar("traces", len(args.trace), quiet=quiet) as advance:
        for trace_path in args.trace:
            trace = read_trace(trace_path)
            if trace.name in traces:
                raise SplitmqError(f"two traces named {trace.name}: rename one")
            traces[trace.name] = trace_entry(trace, args, device, server)
            advance()
    return {
        "model": args.model,
        "settings": {
            "load": args.load,
            "rate_hz": args.rate,
            "device": device_label(args),
            "slowdown": device.slowdown,
            "min_agreement": args.min_agreement,
            "codecs": list(args.codecs),
            "input_codec": args.input_codec,
            "pairs": [[k, c] for k, c in device.admissible_pairs()],
            "one_way_ms": args.one_way_ms,
            "arrivals": args.arrivals,
            "seed": args.seed,
            "server_profile": str(args.server_profile or DEFAULT_SERVER_PROFILE),
            "server_device": server.device,
            "candidates": list(device.candidates),
            "local_ms": device.local_ms,
        },
        "traces": traces,
    }


def trace_entry(
    trace: UplinkTrace, args: argparse.Namespace, device: DeviceProfile, server: ServerProfile
) -> dict[str, Any]:
    """Simulate every strategy on one trace: the summary, targets and (with --plots) a plot."""
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
        # The whole name: x.up and x.down must not share a plot.
        stem = trace.name.replace(".", "-")
        entry["plot"] = str(plot_trace(sim, result, Path(args.plots) / f"chooser-{stem}.png"))
    return entry


def device_label(args: argparse.Namespace) -> str:
    if args.device_profile:
        return f"{args.device_profile} x{args.slowdown:g}"
    if args.device == MEASURED_HERE:
        return f"measured here (1 thread) x{args.slowdown:g}"
    return f"{args.device} (shipped: {DEVICE_CLASSES[args.device].description})"


#: Two simulated means closer than this are equal (sums of floats differ in the last bits).
TIE_MS = 1e-6


def targets(result: TraceResult) -> dict[str, Any]:
    """The chooser's targets on this trace, with the margins."""
    stats = {name: run.stats() for name, run in result.runs.items()}
    dynamic, oracle = stats["dynamic"], stats["oracle"]
    static, neuro, local = stats["static_best"], stats["neurosurgeon"], stats["local"]
    race = stats["dynamic_race"]
    always = stats["dynamic_race_always"]
    over_oracle = dynamic["mean_ms"] / oracle["mean_ms"] - 1
    oracle_gain = 1 - oracle["mean_ms"] / static["mean_ms"]
    share = captured(result.runs)
    ceiling = captured(result.runs, strategy="dynamic_knows_past")
    of_ceiling = share / ceiling if share is not None and ceiling else None
    judged = oracle_gain >= 0.05
    return {
        "dynamic_over_oracle_pct": round(100 * over_oracle, 2),
        "oracle_gain_over_static_pct": round(100 * oracle_gain, 2),
        "captured_90pct": share is not None and share >= 0.9 if judged else None,
        "captured_of_knowing_past": None if of_ceiling is None else round(of_ceiling, 3),
        "captured_90pct_of_knowing_past": (
            of_ceiling is not None and of_ceiling >= 0.9 if judged else None
        ),
        "mean_at_or_below_static_best": dynamic["mean_ms"] <= static["mean_ms"] + TIE_MS,
        "p95_at_or_below_static_best": dynamic["p95_ms"] <= static["p95_ms"] + TIE_MS,
        "mean_below_neurosurgeon": dynamic["mean_ms"] < neuro["mean_ms"] - TIE_MS,
        "race_p99_over_local": round(race["p99_ms"] / local["mean_ms"], 3),
        "race_p99_within_1_02_local": race["p99_ms"] <= 1.02 * local["mean_ms"],
        "race_mean_at_or_below_oracle": race["mean_ms"] <= oracle["mean_ms"] + TIE_MS,
        "race_always_p99_over_local": round(always["p99_ms"] / local["mean_ms"], 3),
        "race_always_mean_at_or_below_oracle": always["mean_ms"] <= oracle["mean_ms"] + TIE_MS,
    }


def _check_positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise SplitmqError(f"--{name} must be a positive number, got {value}")


def print_table(report: dict[str, Any]) -> None:
    settings = report["settings"]
    print(
        f"{report['model']}, load {settings['load']}, {settings['rate_hz']:g} req/s, "
        f"device {settings['device']} (local {settings['local_ms']:.1f} ms), "
        f"one-way {settings['one_way_ms']:g} ms, server {settings['server_device']}, "
        f"agreement floor {settings['min_agreement']:g}"
    )
    for name, entry in report["traces"].items():
        error = entry["estimator_error"]
        print(
            f"\n{name}: {entry['mean_mbit_s']:.2f} Mbit/s mean, {entry['requests']} requests, "
            f"static_best k={entry['static_best_k']}, "
            f"oracle agreement {entry['oracle_agreement']:.3f}, "
            f"captured {_share(entry['captured'])} "
            f"(knowing the past {_share(entry['captured_knowing_past'])}), estimator |log error| "
            f"p50 {_num(error['p50'])} p90 {_num(error['p90'])}"
        )
        print(
            f"  {'strategy':18s} {'mean':>8s} {'p50':>8s} {'p95':>8s} {'p99':>8s} "
            f"{'device ms':>9s}  fallbacks  splits"
        )
        for strategy in TABLE_STRATEGIES:
            s = entry["strategies"][strategy]
            fallbacks = entry["fallbacks"].get(strategy, 0)
            shares = entry["split_share"][strategy]
            splits = " ".join(f"{k}:{v:.0%}" for k, v in shares.items() if v >= 0.01)
            print(
                f"  {strategy:18s} {s['mean_ms']:8.1f} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} "
                f"{s['p99_ms']:8.1f} {s.get('device_compute_ms', 0.0):9.1f}  {fallbacks:9d}  "
                f"{splits}"
            )
        t = entry["targets"]
        print(
            f"  targets: dynamic {t['dynamic_over_oracle_pct']:+.1f}% vs oracle, oracle gain "
            f"{t['oracle_gain_over_static_pct']:.1f}% (captured >= 90%: "
            f"{_yes(t['captured_90pct'])}; >= 90% of knowing the past: "
            f"{_yes(t['captured_90pct_of_knowing_past'])}), mean <= static_best: "
            f"{_yes(t['mean_at_or_below_static_best'])}, p95 <= static_best: "
            f"{_yes(t['p95_at_or_below_static_best'])}, mean < neurosurgeon: "
            f"{_yes(t['mean_below_neurosurgeon'])}, race p99 {t['race_p99_over_local']:.3f}x "
            f"local, race mean <= oracle: {_yes(t['race_mean_at_or_below_oracle'])} (always: "
            f"{_yes(t['race_always_mean_at_or_below_oracle'])}, p99 "
            f"{t['race_always_p99_over_local']:.3f}x local)"
        )


def _yes(flag: bool | None) -> str:
    return "n/a" if flag is None else "yes" if flag else "NO"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
