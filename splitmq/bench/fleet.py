"""Fleet load generator: N light devices at R requests/s each against one worker, S seconds.

Every device is a real MQTT client (`splitmq.bench.light_device.LightDevice`, its own connection and
result topic) publishing real frames: by default the bundled sample photos scaled to the echo
model's 16x16 split-0 input as lossless WebP, served by a worker process running the echo
runner (frames decoded and validated, no model), so the figures are the runtime's and the
broker's, not a CPU-bound tail's. One scheduler thread sends every device's requests at its
rate, each device with a random phase. A request ends "ok", "rejected", "expired" or "error"
by the worker's reply; `lost` counts those without any reply when the run has drained, and
`duplicates` second replies to one request.

The baseline, in the same run and through the same broker just before the load: a bare paho
ping-pong of the same payload size (splitmq.bench.raw_pingpong). Latencies are reported in ms and as
ratios to its p50/p99.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from broker.client import BrokerSettings
from broker.errors import BrokerError
from broker.launcher import MosquittoBroker
from device_node.link import DeviceLink
from edge_worker.runner import echo_model_info
from schemas.frame import encode_frame
from splitmq.bench.light_device import LightDevice, Reply
from splitmq.bench.raw_pingpong import measure_raw_rtt
from splitmq.reports import latency_stats, machine
from splitmq.worker_process import (
    ECHO_MODEL,
    connected,
    echo_worker_config,
    wait_until_serving,
    worker_process,
)
from splitmq_base.errors import ConfigurationError, SplitmqError
from splitting.images import center_crop, sample_images

WORKER_ID = "fleet-worker"
ECHO_SPLIT = 0  # a 16x16 RGB image: a real photo, scaled down
WORKER_START_S = 60.0
RAW_PINGS = 500


class FleetBenchError(SplitmqError):
    """The fleet benchmark could not run (no worker, devices that cannot connect)."""


@dataclass(frozen=True)
class FleetOptions:
    devices: int = 200
    rate_hz: float = 2.0
    duration_s: float = 60.0
    drain_s: float = 30.0
    expiry_s: int = 30
    max_batch: int = 8
    queue_capacity: int = 64
    max_held_bytes: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.devices < 1 or self.rate_hz <= 0 or self.duration_s <= 0:
            raise ConfigurationError("--devices, --rate and --duration must be positive")


@dataclass
class _Sent:
    device: LightDevice
    at: float


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


def run_fleet_bench(options: FleetOptions) -> dict[str, Any]:
    frames = fleet_frames()
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(MosquittoBroker())
        settings = BrokerSettings(host=broker.host, port=broker.port)
        exited = stack.enter_context(_worker_process(options, settings))
        _wait_for_worker(settings, exited)
        raw = latency_stats(
            measure_raw_rtt(
                settings,
                payload_bytes=int(np.median([len(f) for f in frames])),
                requests=RAW_PINGS,
                warmup=50,
            )
        )
        collector = _Collector()
        devices = _connect(settings, options.devices, collector, stack)
        sent, send_lag = _send_all(devices, frames, options, collector)
        collector.drain(sent, options.drain_s)
        stats = collector.summary(sent, options.duration_s)
    latency = stats.pop("latency_ms")
    return {
        "devices": options.devices,
        "rate_hz": options.rate_hz,
        "duration_s": options.duration_s,
        **stats,
        "latency_ms": latency,
        "raw_rtt_ms": raw,
        "latency_ratio": {
            key: latency[f"{key}_ms"] / raw[f"{key}_ms"]
            if latency[f"{key}_ms"] and raw[f"{key}_ms"]
            else None
            for key in ("p50", "p99")
        },
        "send_lag_ms": send_lag,
        "frame_bytes": int(np.median([len(f) for f in frames])),
        "worker": {
            "runner": "echo",
            "max_batch": options.max_batch,
            "queue_capacity": options.queue_capacity,
            "max_held_bytes": options.max_held_bytes,
        },
        "machine": machine(),
    }


class _Collector:
    """Every reply of every device, keyed by request id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.sent_at: dict[str, float] = {}
        self.first: dict[str, Reply] = {}
        self.duplicates = 0

    def on_reply(self, device: LightDevice, request_id: str, reply: Reply) -> None:
        with self._lock:
            if request_id in self.first:
                self.duplicates += 1
            else:
                self.first[request_id] = reply
            self._lock.notify_all()

    def sending(self, request_id: str, at: float) -> None:
        with self._lock:
            self.sent_at[request_id] = at

    def drain(self, sent: int, timeout_s: float) -> None:
        with self._lock:
            self._lock.wait_for(lambda: len(self.first) >= sent, timeout_s)

    def summary(self, sent: int, duration_s: float) -> dict[str, Any]:
        with self._lock:
            replies = dict(self.first)
            sent_at = dict(self.sent_at)
            duplicates = self.duplicates
        statuses: dict[str, int] = {}
        latencies: list[float] = []
        batches: list[int] = []
        for request_id, reply in replies.items():
            status = reply.message.status if reply.message else "unparseable"
            statuses[status] = statuses.get(status, 0) + 1
            if reply.message is not None and reply.message.status == "ok":
                latencies.append((reply.received_at - sent_at[request_id]) * 1000.0)
                if reply.message.timings is not None:
                    batches.append(reply.message.timings.batch_size)
        answered = statuses.get("ok", 0)
        return {
            "sent": sent,
            "answered": answered,
            "rejected": statuses.get("rejected", 0),
            "expired": statuses.get("expired", 0),
            "errors": statuses.get("error", 0) + statuses.get("unparseable", 0),
            "lost": sent - len(replies),
            "duplicates": duplicates,
            "per_s": answered / duration_s,
            "latency_ms": latency_stats(latencies),
            "mean_batch": float(np.mean(batches)) if batches else 0.0,
        }


def _connect(
    settings: BrokerSettings, count: int, collector: _Collector, stack: contextlib.ExitStack
) -> list[LightDevice]:
    devices = []
    for d in range(count):
        device = LightDevice(settings, f"fleet-{d}", on_reply=collector.on_reply)
        try:
            device.start(wait_s=10.0)
        except BrokerError as exc:
            raise FleetBenchError(f"device {d} cannot connect: {exc}") from exc
        stack.callback(device.stop)
        devices.append(device)
    return devices


def _send_all(
    devices: list[LightDevice], frames: list[bytes], options: FleetOptions, collector: _Collector
) -> tuple[int, dict[str, float]]:
    """Each device sends at `rate_hz` with a random phase for `duration_s`; returns the count
    sent and how late the scheduler was against the planned send times (ms)."""
    rng = random.Random(options.seed)
    period = 1.0 / options.rate_hz
    start = time.perf_counter() + 0.1
    end = start + options.duration_s
    queue = [(start + rng.random() * period, d) for d in range(len(devices))]
    heapq.heapify(queue)
    counts = [0] * len(devices)
    lags: list[float] = []
    sent = 0
    while queue:
        due, d = heapq.heappop(queue)
        if due >= end:
            continue
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter()
        lags.append((now - due) * 1000.0)
        device = devices[d]
        request_id = f"{device.device_id}-{counts[d]}"
        counts[d] += 1
        collector.sending(request_id, now)
        topic = device.topics.request(ECHO_MODEL, ECHO_SPLIT, device.device_id)
        device.send(topic, frames[sent % len(frames)], request_id, expiry_s=options.expiry_s)
        sent += 1
        heapq.heappush(queue, (due + period, d))
    return sent, latency_stats(lags)


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
    with connected(DeviceLink(settings, "fleet-observer"), error=FleetBenchError) as observer:
        wait_until_serving(
            lambda wait_s: observer.wait_for_worker(ECHO_MODEL, ECHO_SPLIT, wait_s),
            exited,
            timeout_s=WORKER_START_S,
            error=FleetBenchError,
        )


def format_report(result: dict[str, Any]) -> str:
    lat, raw, ratio = result["latency_ms"], result["raw_rtt_ms"], result["latency_ratio"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def x(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}x"

    return "\n".join(
        [
            f"fleet benchmark: {result['devices']} devices x {result['rate_hz']:g} req/s x "
            f"{result['duration_s']:g} s, echo worker, {result['frame_bytes']}-byte frames",
            f"  sent {result['sent']}  answered {result['answered']}  rejected "
            f"{result['rejected']}  expired {result['expired']}  errors {result['errors']}  "
            f"lost {result['lost']}  duplicates {result['duplicates']}",
            f"  answered per s {result['per_s']:.1f}  mean batch {result['mean_batch']:.2f}",
            f"  latency ms p50 {ms(lat['p50_ms'])}  p95 {ms(lat['p95_ms'])}  "
            f"p99 {ms(lat['p99_ms'])}",
            f"  bare paho ms p50 {ms(raw['p50_ms'])}  p99 {ms(raw['p99_ms'])}  ->  ratio p50 "
            f"{x(ratio['p50'])}  p99 {x(ratio['p99'])}",
            f"  scheduler lag ms p50 {ms(result['send_lag_ms']['p50_ms'])}  p99 "
            f"{ms(result['send_lag_ms']['p99_ms'])}",
        ]
    )
