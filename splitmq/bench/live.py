"""Live versus simulated: one trace, the same settings, the real system and the simulator.

The live run is the demo's system with one device: a real Mosquitto, the demo's edge worker
(CPU, in this process) and one device node whose uplink goes through a `TraceShaper`. The
simulated run is `splitmq.sim` on the same trace with what models that system:

- the device: the same cached model profile the live device's policy is built from, scaled by
  the same slowdown, with the same codec;
- the server: a CPU profile of the model's tails measured on this host
  (`measure_server_profile`, cached), under the `idle` load (one device, nothing else queued);
- the link: the same trace and link constants (`splitting.traces`), the same one-way delay;
- the policy: built by the device node's own factory (`device_node.policies.build_policy`) from
  the same configuration, with the device node's default deadline where the policy gives none;
- the schedule: the same rate, one request at a time (`SimSettings.pipelined=False`), the same
  number of requests.

Alignment: the shaper's trace starts (time 0) when the shaper starts, before the device
connects and sends its warm-up request. The bench notes when the first counted request starts
on the shaper's clock and starts the simulated requests at that same trace time
(`SimSettings.start_s`), so both runs see the same stretch of the trace.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator

from broker.launcher import MosquittoBroker
from device_node.config import DeviceConfig, DynamicPolicyConfig, DynamicPolicyOptions
from device_node.judgement import judge
from device_node.node import DeviceNode
from device_node.policies import build_policy
from device_node.records import ResultRecord
from device_node.runtime import build_device, policy_context
from device_node.shaper import TraceShaper
from device_node.sources import CyclingSource, SourceImage, sample_source_images
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitmq.bench.errors import BenchError, BenchSettingsError
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.demo_config import (
    DEFAULT_MODEL,
    DEFAULT_SLOWDOWN,
    DemoOptions,
    device_config,
    worker_config,
)
from splitmq.reports import LatencyStats
from splitmq.sim.inputs import read_trace
from splitmq.sim.inputs import server_profile as load_server_profile
from splitmq.sim.runner import SimSettings, Simulation, StrategyRun
from splitmq.sim.scenarios import make_load
from splitmq_base.models import StrictModel
from splitting.errors import SplittingError
from splitting.estimators import TelemetryLike
from splitting.latency import DeviceProfile
from splitting.policy import Decision, SplitPolicy
from splitting.profiling import default_cache_dir, load_or_profile
from splitting.registry import load_model
from splitting.server_profile import ServerProfile, measure_server_profile
from splitting.torch_blocks import TorchBlocks
from splitting.traces import DEFAULT_ONE_WAY_MS, UplinkTrace

#: Batch sizes of the measured CPU profile (one device needs batch 1; the rest for reuse).
MEASURED_BATCHES = (1, 2, 4, 8)
#: The simulated server's load: the live worker serves only our one device.
SIM_LOAD = "idle"
WORKER_WAIT_S = 30.0


class LiveBenchOptions(BenchOptions):
    trace: Path = Field(strict=False)
    policy: str = "dynamic"
    split: int | None = None
    requests: int = 100
    rate_hz: float = 2.0
    one_way_ms: float = DEFAULT_ONE_WAY_MS
    model: str = DEFAULT_MODEL
    codec: str = "int5"
    slowdown: float = DEFAULT_SLOWDOWN
    deadline_ms: float = 5000.0
    #: A server profile to use as is; None: the CPU profile measured here (cached).
    server_profile: Path | None = Field(default=None, strict=False)
    #: torch threads of the device and of the worker (one process): one each, so that the two
    #: do not oversubscribe a small host's cores and each runs at its one-thread profile.
    torch_threads: int = 1
    #: Re-measure the device profile before the live run (and refresh the cache the live
    #: device reads), so that both runs model the device as this host runs it now: a profile
    #: cached at a quieter moment was measured 15% faster than the live device ran.
    fresh_device_profile: bool = True

    @model_validator(mode="after")
    def _check(self) -> LiveBenchOptions:
        self._check_policy_and_counts()
        for name in ("rate_hz", "slowdown", "deadline_ms"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise BenchSettingsError(f"{name} must be a positive number, got {value}")
        if not np.isfinite(self.one_way_ms) or self.one_way_ms < 0:
            raise BenchSettingsError(f"one_way_ms must be >= 0, got {self.one_way_ms}")
        return self

    def _check_policy_and_counts(self) -> None:
        if self.policy not in ("dynamic", "fixed"):
            raise BenchSettingsError(f"policy must be 'dynamic' or 'fixed', got {self.policy!r}")
        if self.policy == "dynamic" and self.split is not None:
            raise BenchSettingsError("--split fixes the split; it does not combine with dynamic")
        if self.torch_threads < 1:
            raise BenchSettingsError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if self.requests < 1:
            raise BenchSettingsError(f"need at least one request, got {self.requests}")

    def demo_options(self) -> DemoOptions:
        """The demo's options for one device: its worker and device configurations."""
        return DemoOptions(
            devices=1,
            requests=self.requests,
            split=self.split,
            policy=self.policy,
            codec=self.codec,
            model=self.model,
            trace=self.trace,
            deadline_ms=self.deadline_ms,
            rate_hz=self.rate_hz,
            slowdown=self.slowdown,
            torch_threads=self.torch_threads,
            quiet=True,
        )


@dataclass
class LiveRun:
    records: list[ResultRecord]
    #: When the first counted request started, on the shaper's trace clock (s).
    trace_offset_s: float
    wall_s: float
    worker: dict[str, Any] = field(default_factory=dict)


class RunStats(LatencyStats):
    """One run's latency summary (the `LatencyStats` keys, flattened) and where it ran."""

    requests: int
    offloaded: int
    local: int
    fallbacks: int
    splits: dict[str, int]
    mean_ms_by_split: dict[str, float]
    bytes_sent_mean: float


class LiveRunStats(RunStats):
    offloaded_parts_ms: dict[str, float] = Field(description="mean time per part, offloaded")
    judgement: dict[str, dict[str, Any]]
    wall_s: float
    worker: dict[str, int]


class WorkerTimedStats(RunStats):
    """The simulation again, its server at the live worker's measured speed."""

    worker_speed_factor: float
    difference_pct: float


class LiveSettings(StrictModel):
    model: str
    policy: str
    split: int | None
    requests: int
    rate_hz: float
    one_way_ms: float
    slowdown: float
    codec: str
    deadline_ms: float
    sim_load: str
    server_profile: str
    server_device: str
    trace_offset_s: float
    trace_mean_mbit_s: float
    cpus: int | None
    torch_threads: int


class LiveReport(BenchReport):
    trace: str
    settings: LiveSettings
    live: LiveRunStats
    sim: RunStats
    difference_pct: float = Field(description="(live mean - sim mean) / sim mean, in %")
    sim_worker_timed: WorkerTimedStats | None


# -- configuration shared by both runs --------------------------------------------------------


def device_configuration(options: LiveBenchOptions, settings: BrokerSettings) -> DeviceConfig:
    """The live device's configuration; the simulated policy is built from it too."""
    config = device_config(options.demo_options(), 1, settings)
    if options.policy == "dynamic":
        # The device knows its path's round trip: the same one-way delay as the shaper's.
        policy = DynamicPolicyConfig(options=DynamicPolicyOptions(one_way_ms=options.one_way_ms))
        config = config.model_copy(update={"policy": policy})
    return config


def server_profile_path(model: str, threads: int) -> Path:
    """Where the CPU profile of this host's worker is cached (next to the model profiles)."""
    name = f"{model}-cpu-{platform.node() or 'host'}-t{threads}-thread.json"
    return default_cache_dir().parent / "server-profiles" / name


def cpu_server_profile(options: LiveBenchOptions) -> tuple[ServerProfile, Path]:
    """The given server profile, else the cached CPU profile of this host (measured once)."""
    if options.server_profile is not None:
        return load_server_profile(options.server_profile), options.server_profile
    path = server_profile_path(options.model, options.torch_threads)
    if not path.is_file():
        _measure_in_a_thread(options.model, path, options.torch_threads)
    return load_server_profile(path), path


def _measure_in_a_thread(model: str, path: Path, threads: int) -> None:
    """Time the tails off the main thread, as the worker's compute thread runs them.

    Measured on this host (2 cores, torch 2.14 with OpenMP): the same tail takes ~1.5-1.9x as
    long in a thread other than the main one, so a main-thread profile models a faster worker
    than the live one.
    """
    failure: list[SplittingError] = []

    def measure() -> None:
        try:
            measure_server_profile(model, MEASURED_BATCHES, threads=threads, path=path)
        except SplittingError as exc:
            failure.append(exc)

    thread = threading.Thread(target=measure, name="server-profile")
    thread.start()
    thread.join()
    if failure:
        raise BenchError(f"cannot measure a server profile: {failure[0]}") from failure[0]


# -- the live run -------------------------------------------------------------------------------


def run_live(options: LiveBenchOptions, model: TorchBlocks, images: list[SourceImage]) -> LiveRun:
    """One device through a trace shaper to a real broker and the demo's worker."""
    demo = options.demo_options()
    with MosquittoBroker() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port, reconnect_max_delay_s=2)
        with _worker(demo, settings) as worker, _shaper(options, broker) as (shaper, zero):
            host, port = shaper.address
            config = device_configuration(options, settings)
            config = config.model_copy(
                update={"broker": config.broker.model_copy(update={"host": host, "port": port})}
            )
            with build_device(config, model=model) as node:
                _wait_for_worker(node)
                # As the demo: one uncounted request first (first calls are slow).
                node.run_request(images[0], request_id=f"{config.device_id}-warmup")
                started = time.monotonic()
                records = node.run(
                    CyclingSource(images), requests=options.requests, rate_hz=options.rate_hz
                )
                wall = time.monotonic() - started
            stats = worker.stats.snapshot()
    if len(records) != options.requests:
        raise BenchError(f"live run: {len(records)} records for {options.requests} requests")
    worker_stats = {"served": stats.served, "rejected": stats.rejected, "errors": stats.errors}
    return LiveRun(records, started - zero, wall, worker_stats)


@contextlib.contextmanager
def _worker(demo: DemoOptions, settings: BrokerSettings) -> Iterator[EdgeWorker]:
    worker = EdgeWorker(worker_config(demo, settings))
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def _shaper(
    options: LiveBenchOptions, broker: MosquittoBroker
) -> Iterator[tuple[TraceShaper, float]]:
    """A started shaper and the monotonic time of its trace's time 0 (within microseconds:
    the shaper takes its start time inside `start()`)."""
    shaper = TraceShaper(options.trace, (broker.host, broker.port), one_way_ms=options.one_way_ms)
    before = time.monotonic()
    shaper.start()
    after = time.monotonic()
    try:
        yield shaper, (before + after) / 2
    finally:
        shaper.stop()


def _wait_for_worker(node: DeviceNode) -> None:
    if not node.link.wait_for_worker(node.model.name, None, WORKER_WAIT_S):
        raise BenchError(f"no worker serving {node.model.name} within {WORKER_WAIT_S} s")


# -- the simulated run --------------------------------------------------------------------------


class _NodeDeadline:
    """A policy as the device node runs it: no deadline from the policy means the node's."""

    def __init__(self, policy: SplitPolicy, default_ms: float) -> None:
        self.policy = policy
        self.default_ms = default_ms

    def choose(self, now: float) -> Decision:
        return self.policy.choose(now)

    def on_uplink_sent(self, nbytes: int, now: float) -> None:
        self.policy.on_uplink_sent(nbytes, now)

    def on_uplink_sample(self, nbytes: int, seconds: float, now: float) -> None:
        self.policy.on_uplink_sample(nbytes, seconds, now)

    def on_device_time(self, k: int, ms: float, now: float, *, representative: bool = True) -> None:
        self.policy.on_device_time(k, ms, now, representative=representative)

    def on_telemetry(self, worker_id: str, telemetry: TelemetryLike | None, now: float) -> None:
        self.policy.on_telemetry(worker_id, telemetry, now)

    def on_result(
        self, k: int, offloaded: bool, latency_ms: float, now: float, *, local_tail_ms: float = 0.0
    ) -> None:
        self.policy.on_result(k, offloaded, latency_ms, now, local_tail_ms=local_tail_ms)

    def probe_bytes(self, now: float) -> int:
        return self.policy.probe_bytes(now)

    def deadline_ms(self, decision: Decision) -> float | None:
        return self.policy.deadline_ms(decision) or self.default_ms


def run_simulated(
    options: LiveBenchOptions,
    device: DeviceProfile,
    server: ServerProfile,
    trace: UplinkTrace,
    new_policy: Callable[[], SplitPolicy],
    start_s: float,
) -> StrategyRun:
    """The first `options.requests` requests of the simulated device, from trace time
    `start_s` (the sequential schedule may fit fewer in a span: then simulate longer)."""
    span = (options.requests + 1) / options.rate_hz
    while True:
        duration = start_s + span
        settings = SimSettings(
            rate_hz=options.rate_hz,
            duration_s=duration,
            one_way_ms=options.one_way_ms,
            start_s=start_s,
        )
        sim = Simulation(device, server, trace, make_load(SIM_LOAD, duration), settings)
        run = sim.run_policy(options.policy, new_policy())
        if run.k.size >= options.requests:
            return _first(run, options.requests)
        span *= 2


def _first(run: StrategyRun, count: int) -> StrategyRun:
    return StrategyRun(
        run.name,
        run.arrival_s[:count],
        run.k[:count],
        run.latency_ms[:count],
        run.offloaded[:count],
        run.fallback[:count],
        None if run.rate_estimate_bps is None else run.rate_estimate_bps[:count],
        run.probes,
    )


# -- the comparison -------------------------------------------------------------------------------


def live_stats(records: list[ResultRecord], live: LiveRun) -> LiveRunStats:
    offloaded = sum(r.offloaded for r in records)
    return LiveRunStats(
        **LatencyStats.of(r.total_ms for r in records).model_dump(),
        requests=len(records),
        offloaded=offloaded,
        local=len(records) - offloaded,
        fallbacks=sum(r.fallback is not None for r in records),
        splits=_split_counts(r.split for r in records),
        mean_ms_by_split=_mean_by_split([(r.split, r.total_ms) for r in records]),
        bytes_sent_mean=statistics.fmean(r.bytes_sent for r in records),
        offloaded_parts_ms=_mean_parts([r for r in records if r.offloaded]),
        judgement={device: j.to_dict(device) for device, j in judge(records).items()},
        wall_s=round(live.wall_s, 2),
        worker=live.worker,
    )


def _mean_parts(records: list[ResultRecord]) -> dict[str, float]:
    """Where an offloaded request's time went, on average (the demo's breakdown)."""
    if not records:
        return {}
    names = list(records[0].latency.__dataclass_fields__)
    return {name: statistics.fmean(getattr(r.latency, name) for r in records) for name in names}


def sim_stats(run: StrategyRun, device: DeviceProfile) -> RunStats:
    offloaded = int(run.offloaded.sum())
    sent = [device.costs[int(k)].payload_bytes for k in run.k]
    return RunStats(
        **LatencyStats.of(run.latency_ms.tolist()).model_dump(),
        requests=int(run.k.size),
        offloaded=offloaded,
        local=int(run.k.size) - offloaded,
        fallbacks=int(run.fallback.sum()),
        splits=_split_counts(int(k) for k in run.k),
        mean_ms_by_split=_mean_by_split(
            [(int(k), float(ms)) for k, ms in zip(run.k, run.latency_ms, strict=True)]
        ),
        bytes_sent_mean=float(statistics.fmean(sent)),
    )


def _mean_by_split(rows: list[tuple[int, float]]) -> dict[str, float]:
    by_split: dict[int, list[float]] = {}
    for k, ms in rows:
        by_split.setdefault(k, []).append(ms)
    return {str(k): statistics.fmean(by_split[k]) for k in sorted(by_split)}


def _split_counts(splits: Iterator[int] | Any) -> dict[str, int]:
    counts: dict[int, int] = {}
    for k in splits:
        counts[k] = counts.get(k, 0) + 1
    return {str(k): counts[k] for k in sorted(counts)}


def run_bench(options: LiveBenchOptions) -> LiveReport:
    """Run live, then simulate the same settings."""
    trace = read_trace(options.trace)
    torch.set_num_threads(options.torch_threads)  # the device's thread (the main one)
    server, server_path = cpu_server_profile(options)
    model = TorchBlocks(load_model(options.model))
    settings = BrokerSettings(host="127.0.0.1", port=1)  # only for building the policy
    config = device_configuration(options, settings)
    if options.fresh_device_profile:
        load_or_profile(
            model.model, codec=config.codec, jpeg_quality=config.jpeg_quality, refresh=True
        )
    context = policy_context(config, model)
    device = DeviceProfile.from_model_profile(
        context.profile(), slowdown=options.slowdown, codec=options.codec
    )
    live = run_live(options, model, sample_source_images())

    def new_policy() -> SplitPolicy:
        return _NodeDeadline(build_policy(config.policy, context), config.deadline_ms)

    sim = run_simulated(options, device, server, trace, new_policy, live.trace_offset_s)
    live_summary, sim_summary = live_stats(live.records, live), sim_stats(sim, device)
    return LiveReport(
        provenance=Provenance.collect(options),
        trace=str(options.trace),
        settings=_settings(options, server, server_path, live, trace),
        live=live_summary,
        sim=sim_summary,
        difference_pct=_difference_pct(live_summary.mean_ms, sim_summary.mean_ms),
        sim_worker_timed=_worker_timed(options, live, device, server, trace, new_policy),
    )


def _settings(
    options: LiveBenchOptions,
    server: ServerProfile,
    server_path: Path,
    live: LiveRun,
    trace: UplinkTrace,
) -> LiveSettings:
    return LiveSettings(
        model=options.model,
        policy=options.policy,
        split=options.split,
        requests=options.requests,
        rate_hz=options.rate_hz,
        one_way_ms=options.one_way_ms,
        slowdown=options.slowdown,
        codec=options.codec,
        deadline_ms=options.deadline_ms,
        sim_load=SIM_LOAD,
        server_profile=str(server_path),
        server_device=server.device,
        trace_offset_s=round(live.trace_offset_s, 4),
        trace_mean_mbit_s=trace.mean_mbit_s,
        cpus=os.cpu_count(),
        torch_threads=options.torch_threads,
    )


def _difference_pct(live_ms: float | None, sim_ms: float | None) -> float:
    """(live - sim) / sim in %; both runs have at least one request, so both means exist."""
    if live_ms is None or sim_ms is None:
        raise BenchError("a run without a latency to compare")
    return 100 * (live_ms - sim_ms) / sim_ms


def worker_speed_factor(records: list[ResultRecord], server: ServerProfile, model: str) -> float:
    """How much longer the live worker's tails took (its own `compute_ms`) than the server
    profile's batch-1 tails at the same splits; nan without an offloaded request."""
    offloaded = [r for r in records if r.offloaded]
    profiled = sum(server.tail_ms(model, r.split, 1) for r in offloaded)
    if not offloaded or profiled <= 0:
        return float("nan")
    return sum(r.latency.compute_ms for r in offloaded) / profiled


def scaled_profile(server: ServerProfile, factor: float) -> ServerProfile:
    """The same profile with every tail and block time multiplied by `factor`."""
    data = server.to_dict()
    for entry in data["models"].values():
        for key in ("tail_ms", "block_ms"):
            for curve, times in entry.get(key, {}).items():
                entry[key][curve] = [t * factor for t in times]
    return ServerProfile(data, source=f"{server.source} x{factor:.3f}")


def _worker_timed(
    options: LiveBenchOptions,
    live: LiveRun,
    device: DeviceProfile,
    server: ServerProfile,
    trace: UplinkTrace,
    new_policy: Callable[[], SplitPolicy],
) -> WorkerTimedStats | None:
    """A second simulation whose server runs at the live worker's own measured speed (its
    reported compute times), to separate the server's speed from the link and device model."""
    factor = worker_speed_factor(live.records, server, options.model)
    if not np.isfinite(factor):
        return None
    sim = run_simulated(
        options, device, scaled_profile(server, factor), trace, new_policy, live.trace_offset_s
    )
    stats = sim_stats(sim, device)
    live_mean = statistics.fmean(r.total_ms for r in live.records)
    return WorkerTimedStats(
        **stats.model_dump(),
        worker_speed_factor=factor,
        difference_pct=_difference_pct(live_mean, stats.mean_ms),
    )


def format_report(report: LiveReport) -> str:
    s = report.settings
    split = f" split {s.split}" if s.split is not None else ""
    lines = [
        f"{Path(report.trace).name}: {s.policy}{split}, {s.requests} requests at "
        f"{s.rate_hz:g}/s, one-way {s.one_way_ms:g} ms, slowdown {s.slowdown:g}, "
        f"trace from {s.trace_offset_s:.2f} s",
        f"  {'run':5s} {'mean':>8s} {'p50':>8s} {'p95':>8s} {'offloaded':>9s} {'local':>6s}"
        "  splits",
    ]
    for name, r in (("live", report.live), ("sim", report.sim)):
        lines.append(
            f"  {name:5s} {_ms(r.mean_ms)} {_ms(r.p50_ms)} {_ms(r.p95_ms)} "
            f"{r.offloaded:9d} {r.local:6d}  {r.splits}"
        )
    lines.append(f"  live vs sim mean: {report.difference_pct:+.1f}%")
    timed = report.sim_worker_timed
    if timed:
        lines.append(
            "  sim with the live worker's measured tail times "
            f"(x{timed.worker_speed_factor:.2f} the profile): mean {_ms(timed.mean_ms)}, "
            f"live vs it {timed.difference_pct:+.1f}%"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return f"{'-':>8s}" if value is None else f"{value:8.1f}"
