"""A paced device's forward on one torch thread against torch's default, in one run.

`splitmq bench threads` runs the whole model at batch 1, as a device does when it keeps a
request, with a pause between calls (`--pace-ms`, a device's request rate), once with one
intra-op thread and once with torch's default (every core). The two settings alternate round by
round, so a busy machine slows both alike. It backs the device's default `torch_threads: 1`.
"""

from __future__ import annotations

import time

import torch

from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.reports import LatencyStats, Machine, latency_stats, machine
from splitting.registry import DEFAULT_MODEL, load_model


class ThreadsOptions(BenchOptions):
    model: str = DEFAULT_MODEL
    rounds: int = 5
    calls: int = 10
    pace_ms: float = 200.0


class ThreadsReport(BenchReport):
    benchmark: str = "threads"
    machine: Machine
    settings: ThreadsOptions
    default_threads: int
    one_thread: LatencyStats
    default: LatencyStats
    default_over_one: float | None


def run_threads_bench(options: ThreadsOptions) -> ThreadsReport:
    model = load_model(options.model)
    x = torch.rand(1, 3, model.input_size, model.input_size)
    default_threads = torch.get_num_threads()
    samples: dict[int, list[float]] = {1: [], default_threads: []}
    try:
        for _ in range(options.rounds):
            for threads in samples:
                torch.set_num_threads(threads)
                model.forward(x)  # the first call after a change is not a paced call
                samples[threads] += _paced_calls(model.forward, x, options)
    finally:
        torch.set_num_threads(default_threads)
    one = LatencyStats(**latency_stats(samples[1]))
    default = LatencyStats(**latency_stats(samples[default_threads]))
    ratio = round(default.p50_ms / one.p50_ms, 2) if default.p50_ms and one.p50_ms else None
    return ThreadsReport(
        provenance=Provenance.collect(options),
        machine=machine(),
        settings=options,
        default_threads=default_threads,
        one_thread=one,
        default=default,
        default_over_one=ratio,
    )


def _paced_calls(forward: object, x: torch.Tensor, options: ThreadsOptions) -> list[float]:
    assert callable(forward)
    times = []
    for _ in range(options.calls):
        time.sleep(options.pace_ms / 1000)
        started = time.perf_counter()
        forward(x)
        times.append((time.perf_counter() - started) * 1000)
    return times


def format_report(report: ThreadsReport) -> str:
    def row(name: str, stats: LatencyStats) -> str:
        return (
            f"  {name:22s} p50 {stats.p50_ms or 0:7.1f}  p90 {stats.p90_ms or 0:7.1f}"
            f"  mean {stats.mean_ms or 0:7.1f} ms  ({stats.count} calls)"
        )

    return "\n".join(
        [
            f"{report.settings.model}, batch 1, a call every {report.settings.pace_ms:g} ms",
            row("1 thread", report.one_thread),
            row(f"default ({report.default_threads} threads)", report.default),
            f"  default / 1 thread (p50): {report.default_over_one}",
        ]
    )
