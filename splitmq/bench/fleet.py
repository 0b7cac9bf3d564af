"""Fleet benchmark: N light devices at R requests/s each against one worker, S seconds.

Every device is a real MQTT client (`splitmq.bench.light_device.LightDevice`, its own
connection and result topic) publishing real frames: by default the bundled sample photos
scaled to the echo model's 16x16 split-0 input as lossless WebP, served by a worker process
running the echo runner (frames decoded and validated, no model), so the figures are the
runtime's and the broker's, not a CPU-bound tail's. The load generator's scheduler thread
(`splitmq.bench.load`) sends every device's requests at its rate, each device with a random
phase. A request ends "ok", "rejected", "expired" or "error"
by the worker's reply; `lost` counts those without any reply when the run has drained, and
`duplicates` second replies to one request.

The baseline, in the same run and through the same broker just before the load: a bare paho
ping-pong of the same payload size (splitmq.bench.raw_pingpong). Latencies are reported in ms
and as ratios to its p50/p99.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from broker.launcher import MosquittoBroker
from device_node.link import DeviceLink
from edge_worker.runner import echo_model_info
from mqtt_session.client import BrokerSettings
from mqtt_session.errors import MqttSessionError
from schemas.frame import encode_frame
from splitmq.bench.errors import BenchError, BenchSettingsError
from splitmq.bench.light_device import LightDevice
from splitmq.bench.load import LoadGenerator, Pace, Tally
from splitmq.bench.raw_pingpong import measure_raw_rtt
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.bench.transport import Ratio
from splitmq.reports import LatencyStats, Machine, machine
from splitmq.worker_process import (
    ECHO_MODEL,
    connected,
    echo_worker_config,
    wait_until_serving,
    worker_process,
)
from splitmq_base.models import StrictModel
from splitting.images import center_crop, sample_images

WORKER_ID = "fleet-worker"
ECHO_SPLIT = 0  # a 16x16 RGB image: a real photo, scaled down
WORKER_START_S = 60.0
RAW_PINGS = 500


class FleetOptions(BenchOptions):
    devices: int = 200
    rate_hz: float = 2.0
    duration_s: float = 60.0
    drain_s: float = 30.0
    expiry_s: int = 30
    max_batch: int = 8
    queue_capacity: int = 64
    max_held_bytes: int | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _positive(self) -> FleetOptions:
        if self.devices < 1 or self.rate_hz <= 0 or self.duration_s <= 0:
            raise BenchSettingsError("--devices, --rate and --duration must be positive")
        return self


class FleetWorker(StrictModel):
    runner: str = "echo"
    max_batch: int
    queue_capacity: int
    max_held_bytes: int | None


class FleetReport(BenchReport):
    devices: int
    rate_hz: float
    duration_s: float
    sent: int
    answered: int
    rejected: int
    expired: int
    errors: int = Field(description="error replies and unparseable ones")
    lost: int = Field(description="requests without any reply once the run drained")
    duplicates: int
    per_s: float = Field(description="answered requests per second of load")
    mean_batch: float
    latency_ms: LatencyStats
    raw_rtt_ms: LatencyStats
    latency_ratio: Ratio
    send_lag_ms: LatencyStats
    frame_bytes: int
    worker: FleetWorker
    machine: Machine


def fleet_frames() -> list[bytes]:
    """One echo frame per bundled sample photo: its centre crop scaled to 16x16, lossless WebP."""
    info = echo_model_info(ECHO_MODEL)
    side = info.split_shapes[ECHO_SPLIT][0]
    frames = []
    for i, (_, photo) in enumerate(sample_images()):
        small = center_crop(photo, side)
        frames.append(
            encode_frame(
                small.astype(np.uint8),
                codec="webp",
                request_id=f"photo-{i}",
                model=info.name,
                fingerprint=info.fingerprint,
                split=ECHO_SPLIT,
            )
        )
    return frames


def run_fleet_bench(options: FleetOptions) -> FleetReport:
    frames = fleet_frames()
    frame_bytes = int(np.median([len(f) for f in frames]))
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(MosquittoBroker())
        settings = BrokerSettings(host=broker.host, port=broker.port)
        exited = stack.enter_context(_worker_process(options, settings))
        _wait_for_worker(settings, exited)
        raw = LatencyStats.of(
            measure_raw_rtt(settings, payload_bytes=frame_bytes, requests=RAW_PINGS, warmup=50)
        )
        load = LoadGenerator()
        devices = _connect(settings, options.devices, load, stack)
        pace = Pace(options.rate_hz, options.duration_s, options.seed, options.expiry_s)
        sent, send_lag = load.paced(devices, _request_topic, frames, pace)
        load.wait(sent, options.drain_s)
        tally = load.tally(sent)
    return _report(options, tally, raw, send_lag, frame_bytes)


def _request_topic(device: LightDevice) -> str:
    return device.topics.request(ECHO_MODEL, ECHO_SPLIT, device.device_id)


def _report(
    options: FleetOptions,
    tally: Tally,
    raw: LatencyStats,
    send_lag: LatencyStats,
    frame_bytes: int,
) -> FleetReport:
    statuses = tally.statuses()
    latency = LatencyStats.of(tally.latencies_ms())
    batches = [t.batch_size for t in tally.timings()]
    return FleetReport(
        provenance=Provenance.collect(options),
        devices=options.devices,
        rate_hz=options.rate_hz,
        duration_s=options.duration_s,
        sent=tally.sent,
        answered=statuses.get("ok", 0),
        rejected=statuses.get("rejected", 0),
        expired=statuses.get("expired", 0),
        errors=statuses.get("error", 0) + statuses.get("unparseable", 0),
        lost=tally.lost,
        duplicates=tally.duplicates,
        per_s=statuses.get("ok", 0) / options.duration_s,
        mean_batch=float(np.mean(batches)) if batches else 0.0,
        latency_ms=latency,
        raw_rtt_ms=raw,
        latency_ratio=Ratio.of(latency, raw),
        send_lag_ms=send_lag,
        frame_bytes=frame_bytes,
        worker=FleetWorker(
            max_batch=options.max_batch,
            queue_capacity=options.queue_capacity,
            max_held_bytes=options.max_held_bytes,
        ),
        machine=machine(),
    )


def _connect(
    settings: BrokerSettings, count: int, load: LoadGenerator, stack: contextlib.ExitStack
) -> list[LightDevice]:
    devices = []
    for d in range(count):
        device = LightDevice(settings, f"fleet-{d}", on_reply=load.on_reply)
        try:
            device.start(wait_s=10.0)
        except MqttSessionError as exc:
            raise BenchError(f"device {d} cannot connect: {exc}") from exc
        stack.callback(device.stop)
        devices.append(device)
    return devices


def _worker_process(
    options: FleetOptions, settings: BrokerSettings
) -> contextlib.AbstractContextManager[Callable[[], int | None]]:
    config = echo_worker_config(
        settings,
        worker_id=WORKER_ID,
        max_batch=options.max_batch,
        queue_capacity=options.queue_capacity,
        max_held_bytes=options.max_held_bytes,
    )
    return worker_process(config, stdout=subprocess.DEVNULL, quiet=True)


def _wait_for_worker(settings: BrokerSettings, exited: Any) -> None:
    with connected(DeviceLink(settings, "fleet-observer"), error=BenchError) as observer:
        wait_until_serving(
            lambda wait_s: observer.wait_for_worker(ECHO_MODEL, ECHO_SPLIT, wait_s),
            exited,
            timeout_s=WORKER_START_S,
            error=BenchError,
        )


def format_report(result: FleetReport) -> str:
    lat, raw, ratio = result.latency_ms, result.raw_rtt_ms, result.latency_ratio

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def x(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}x"

    return "\n".join(
        [
            f"fleet benchmark: {result.devices} devices x {result.rate_hz:g} req/s x "
            f"{result.duration_s:g} s, echo worker, {result.frame_bytes}-byte frames",
            f"  sent {result.sent}  answered {result.answered}  rejected "
            f"{result.rejected}  expired {result.expired}  errors {result.errors}  "
            f"lost {result.lost}  duplicates {result.duplicates}",
            f"  answered per s {result.per_s:.1f}  mean batch {result.mean_batch:.2f}",
            f"  latency ms p50 {ms(lat.p50_ms)}  p95 {ms(lat.p95_ms)}  p99 {ms(lat.p99_ms)}",
            f"  bare paho ms p50 {ms(raw.p50_ms)}  p99 {ms(raw.p99_ms)}  ->  ratio p50 "
            f"{x(ratio.p50)}  p99 {x(ratio.p99)}",
            f"  scheduler lag ms p50 {ms(result.send_lag_ms.p50_ms)}  p99 "
            f"{ms(result.send_lag_ms.p99_ms)}",
        ]
    )
