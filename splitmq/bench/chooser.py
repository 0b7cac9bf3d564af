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

import math
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from splitmq.bench.errors import BenchError, BenchSettingsError
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.reports import LatencyStats
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
from splitmq_base.models import StrictModel
from splitting.errors import SplittingError
from splitting.latency import DEFAULT_MIN_AGREEMENT, DEFAULT_SLOWDOWN, DeviceProfile
from splitting.reference import DEFAULT_DEVICE_CLASS, DEVICE_CLASSES
from splitting.server_profile import ServerProfile, measure_server_profile
from splitting.traces import DEFAULT_ONE_WAY_MS, UplinkTrace

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


class ChooserOptions(BenchOptions):
    traces: tuple[Path, ...] = Field(strict=False, min_length=1)
    model: str = DEFAULT_MODEL
    load: str = DEFAULT_LOAD
    rate_hz: float = DEFAULT_RATE_HZ
    device: str = DEFAULT_DEVICE_CLASS  # a shipped device class, or MEASURED_HERE
    #: What the device runs its heads on: the shipped profile and speed-up of that backend.
    device_backend: Literal["torch", "onnxruntime"] = "torch"
    slowdown: float = DEFAULT_SLOWDOWN
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    codecs: tuple[str, ...] = Field(default=DEFAULT_BENCH_CODECS, strict=False, min_length=1)
    input_codec: str = "webp"
    server_profile: Path | None = Field(default=None, strict=False)
    #: Measure the tails on this host, write them here and use them as the server profile.
    measure_server_profile: Path | None = Field(default=None, strict=False)
    device_profile: Path | None = Field(default=None, strict=False)
    duration_s: float | None = None  # None: the trace's own, at least 1000 s
    one_way_ms: float = DEFAULT_ONE_WAY_MS
    arrivals: str = "periodic"
    seed: int = 0
    plots: Path | None = Field(default=None, strict=False)

    @model_validator(mode="after")
    def _check(self) -> ChooserOptions:
        _check_positive(rate=self.rate_hz, slowdown=self.slowdown, duration=self.duration_s)
        if not 0 <= self.min_agreement <= 1:
            raise BenchSettingsError(f"--min-agreement must be in [0, 1], got {self.min_agreement}")
        shipped = self.device != MEASURED_HERE and self.device_profile is None
        if self.device_backend != "torch" and not shipped:
            raise BenchSettingsError("--device-backend applies to a shipped --device class")
        if self.measure_server_profile and self.server_profile:
            raise BenchSettingsError("give --server-profile or --measure-server-profile, not both")
        return self

    @property
    def server_profile_path(self) -> Path | None:
        """The server profile the run reads (the measured one, where it measures one)."""
        return self.measure_server_profile or self.server_profile


class StrategyStats(LatencyStats):
    device_compute_ms: float | None = Field(default=None, description="mean per request")


class EstimatorError(StrictModel):
    """|log(estimated / actual rate)| of the dynamic chooser's offloads."""

    p50: float | None
    p90: float | None
    samples: int


class ChooserTargets(StrictModel):
    dynamic_over_oracle_pct: float
    oracle_gain_over_static_pct: float
    captured_90pct: bool | None
    captured_of_knowing_past: float | None
    captured_90pct_of_knowing_past: bool | None
    mean_at_or_below_static_best: bool
    p95_at_or_below_static_best: bool
    mean_below_neurosurgeon: bool
    race_p99_over_local: float
    race_p99_within_1_02_local: bool
    race_mean_at_or_below_oracle: bool
    race_always_p99_over_local: float
    race_always_mean_at_or_below_oracle: bool


class TraceEntry(StrictModel):
    """Every strategy on one trace."""

    strategies: dict[str, StrategyStats]
    static_best_k: int
    oracle_agreement: float
    requests: int
    fallbacks: dict[str, int]
    probes: dict[str, int]
    captured: float | None
    captured_knowing_past: float | None
    estimator_error: EstimatorError
    split_share: dict[str, dict[str, float]]
    mean_mbit_s: float
    duration_s: float
    targets: ChooserTargets
    seconds: float
    plot: str | None = None


class ChooserSettings(StrictModel):
    load: str
    rate_hz: float
    device: str
    slowdown: float
    min_agreement: float
    codecs: list[str]
    input_codec: str
    pairs: list[tuple[int, str | None]] = Field(description="(split, codec); None: local")
    one_way_ms: float
    arrivals: str
    seed: int
    server_profile: str
    server_device: str
    candidates: list[int]
    local_ms: float


class ChooserReport(BenchReport):
    model: str
    settings: ChooserSettings
    traces: dict[str, TraceEntry]


def bench(options: ChooserOptions, *, quiet: bool = False) -> ChooserReport:
    """Every strategy through every trace of `options`."""
    server = _server(options)
    device = device_profile(
        options.model,
        device_class=options.device,
        slowdown=options.slowdown,
        path=options.device_profile,
        codec=options.codecs[0],
        codecs=options.codecs,
        input_codec=options.input_codec,
        min_agreement=options.min_agreement,
        backend=options.device_backend,
    )
    traces: dict[str, TraceEntry] = {}
    with progress_bar("traces", len(options.traces), quiet=quiet) as advance:
        for trace_path in options.traces:
            trace = read_trace(trace_path)
            if trace.name in traces:
                raise BenchSettingsError(f"two traces named {trace.name}: rename one")
            traces[trace.name] = trace_entry(trace, options, device, server)
            advance()
    return ChooserReport(
        provenance=Provenance.collect(options),
        model=options.model,
        settings=_settings(options, device, server),
        traces=traces,
    )


def _server(options: ChooserOptions) -> ServerProfile:
    """The server profile: measured here first where the options ask for it."""
    if options.measure_server_profile:
        try:
            measure_server_profile(
                options.model, MEASURED_BATCHES, path=options.measure_server_profile
            )
        except SplittingError as exc:
            raise BenchError(f"cannot measure a server profile: {exc}") from exc
    return server_profile(options.server_profile_path)


def _settings(
    options: ChooserOptions, device: DeviceProfile, server: ServerProfile
) -> ChooserSettings:
    return ChooserSettings(
        load=options.load,
        rate_hz=options.rate_hz,
        device=device_label(options),
        slowdown=device.slowdown,
        min_agreement=options.min_agreement,
        codecs=list(options.codecs),
        input_codec=options.input_codec,
        pairs=[(k, c) for k, c in device.admissible_pairs()],
        one_way_ms=options.one_way_ms,
        arrivals=options.arrivals,
        seed=options.seed,
        server_profile=str(options.server_profile_path or DEFAULT_SERVER_PROFILE),
        server_device=server.device,
        candidates=list(device.candidates),
        local_ms=device.local_ms,
    )


def trace_entry(
    trace: UplinkTrace, options: ChooserOptions, device: DeviceProfile, server: ServerProfile
) -> TraceEntry:
    """Simulate every strategy on one trace: the summary, targets and (with plots) a plot."""
    duration = options.duration_s or default_duration_s(trace)
    settings = SimSettings(
        rate_hz=options.rate_hz,
        duration_s=duration,
        one_way_ms=options.one_way_ms,
        arrivals=options.arrivals,
        seed=options.seed,
    )
    load = make_load(options.load, duration, seed=options.seed)
    started = time.perf_counter()
    sim = Simulation(device, server, trace, load, settings)
    result = evaluate(sim, server)
    plot = None
    if options.plots:
        # The whole name: x.up and x.down must not share a plot.
        stem = trace.name.replace(".", "-")
        plot = str(plot_trace(sim, result, options.plots / f"chooser-{stem}.png"))
    return TraceEntry(
        **result.summary(),
        mean_mbit_s=trace.mean_mbit_s,
        duration_s=duration,
        targets=targets(result),
        seconds=round(time.perf_counter() - started, 2),
        plot=plot,
    )


def device_label(options: ChooserOptions) -> str:
    if options.device_profile:
        return f"{options.device_profile} x{options.slowdown:g}"
    if options.device == MEASURED_HERE:
        return f"measured here (1 thread) x{options.slowdown:g}"
    backend = "" if options.device_backend == "torch" else f" on {options.device_backend}"
    return f"{options.device}{backend} (shipped: {DEVICE_CLASSES[options.device].description})"


#: Two simulated means closer than this are equal (sums of floats differ in the last bits).
TIE_MS = 1e-6


def targets(result: TraceResult) -> ChooserTargets:
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
    return ChooserTargets(
        dynamic_over_oracle_pct=round(100 * over_oracle, 2),
        oracle_gain_over_static_pct=round(100 * oracle_gain, 2),
        captured_90pct=share is not None and share >= 0.9 if judged else None,
        captured_of_knowing_past=None if of_ceiling is None else round(of_ceiling, 3),
        captured_90pct_of_knowing_past=(
            of_ceiling is not None and of_ceiling >= 0.9 if judged else None
        ),
        mean_at_or_below_static_best=dynamic["mean_ms"] <= static["mean_ms"] + TIE_MS,
        p95_at_or_below_static_best=dynamic["p95_ms"] <= static["p95_ms"] + TIE_MS,
        mean_below_neurosurgeon=dynamic["mean_ms"] < neuro["mean_ms"] - TIE_MS,
        race_p99_over_local=round(race["p99_ms"] / local["mean_ms"], 3),
        race_p99_within_1_02_local=race["p99_ms"] <= 1.02 * local["mean_ms"],
        race_mean_at_or_below_oracle=race["mean_ms"] <= oracle["mean_ms"] + TIE_MS,
        race_always_p99_over_local=round(always["p99_ms"] / local["mean_ms"], 3),
        race_always_mean_at_or_below_oracle=always["mean_ms"] <= oracle["mean_ms"] + TIE_MS,
    )


def _check_positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise BenchSettingsError(f"--{name} must be a positive number, got {value}")


def print_table(report: ChooserReport) -> None:
    settings = report.settings
    print(
        f"{report.model}, load {settings.load}, {settings.rate_hz:g} req/s, "
        f"device {settings.device} (local {settings.local_ms:.1f} ms), "
        f"one-way {settings.one_way_ms:g} ms, server {settings.server_device}, "
        f"agreement floor {settings.min_agreement:g}"
    )
    for name, entry in report.traces.items():
        _print_trace(name, entry)


def _print_trace(name: str, entry: TraceEntry) -> None:
    error = entry.estimator_error
    print(
        f"\n{name}: {entry.mean_mbit_s:.2f} Mbit/s mean, {entry.requests} requests, "
        f"static_best k={entry.static_best_k}, "
        f"oracle agreement {entry.oracle_agreement:.3f}, "
        f"captured {_share(entry.captured)} "
        f"(knowing the past {_share(entry.captured_knowing_past)}), estimator |log error| "
        f"p50 {_num(error.p50)} p90 {_num(error.p90)}"
    )
    print(
        f"  {'strategy':18s} {'mean':>8s} {'p50':>8s} {'p95':>8s} {'p99':>8s} "
        f"{'device ms':>9s}  fallbacks  splits"
    )
    for strategy in TABLE_STRATEGIES:
        s = entry.strategies[strategy]
        fallbacks = entry.fallbacks.get(strategy, 0)
        shares = entry.split_share[strategy]
        splits = " ".join(f"{k}:{v:.0%}" for k, v in shares.items() if v >= 0.01)
        figures = " ".join(_ms(v) for v in (s.mean_ms, s.p50_ms, s.p95_ms, s.p99_ms))
        print(
            f"  {strategy:18s} {figures} {s.device_compute_ms or 0.0:9.1f}  {fallbacks:9d}  "
            f"{splits}"
        )


def _ms(value: float | None) -> str:
    return f"{'-':>8s}" if value is None else f"{value:8.1f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
