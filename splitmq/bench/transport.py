"""Transport benchmark: MQTT + framing only, with the worker's echo runner as the tail.

1. Round trip on loopback: one device link publishes a tiny frame (64 float32, lossless codec)
   and waits for its result, one request at a time. Timed from just before the frame is
   encoded to the moment paho's network thread hands the device the result: framing, publish,
   broker, the worker's queue, decode and reply, and the result's way back. The worker gathers
   no batch (`max_wait_ms: 0`), since batching is a worker policy, not transport.
   The same number of bare paho ping-pongs of the frame's size through the same broker, right
   after (splitmq.bench.raw_pingpong), give `raw_rtt_ms`; `overhead_ratio` = runtime / raw, the
   figure that carries across machines.
2. Burst: D devices publish N requests in total at QoS 1 as fast as paho takes them, then wait
   for every result. `lost` counts requests without an "ok" result.

What made bursts stall or lose messages, and what prevents it here:
- Stalls: not reproduced with the project's settings, nor with Mosquitto's defaults and no
  TCP_NODELAY on either side: 3,000 QoS 1 messages to one paho subscriber arrived at about
  10,000 msg/s both ways (in-flight window 20). What did stall: with the worker, ten device
  links and their publishers in one Python process on two busy cores, results arrived with gaps
  of up to ~1 s and ~900/s (GIL and CPU contention). The benchmark therefore runs the worker in
  its own process, as deployed (`worker_mode="process"`). TCP_NODELAY (clients and broker)
  is what the round trip needs: Nagle's algorithm meeting delayed ACKs made it 88 ms
  (DESIGN.md), against well under 1 ms here.
- Loss, in the broker: a QoS 1 message for a client whose in-flight window is full waits in the
  broker's per-client queue; past `max_queued_messages` (default 1000) Mosquitto drops it
  silently. Raised to 100,000 messages / 1 GiB (broker/mosquitto.conf).
- Loss, at the worker: the worker advertises ReceiveMaximum = its queue capacity and acknowledges
  a request only when it takes it from its queue, meaning to leave the backlog in the broker.
  Mosquitto 2.0.11 does not enforce a client's ReceiveMaximum once PUBACKs flow: its own log
  showed up to 876 unacknowledged PUBLISHes to a subscriber that advertised 8 (10 publishers,
  1,000 messages, acks 1 ms after receipt; the limit holds only while no PUBACK comes back).
  A worker that rejected the excess answered hundreds of a burst with "rejected" (159 of 1,000
  in this benchmark). The worker now holds whatever was delivered, bounded by bytes
  (edge_worker's `max_held_bytes`), and rejects only past that memory bound, which a device
  answers with its local fallback rather than losing the request.
- paho's own outgoing queue is unbounded (`max_queued_messages_set(0)`), so publish() never
  refuses a request in a burst.
- Expiry: the broker discards a queued request whose MessageExpiryInterval has passed, and the
  worker answers "expired" for one that waited past its deadline. Both are intended for live
  requests; here the expiry is set longer than the burst can take, so an expired request would
  still show up as lost.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import model_validator

from broker.launcher import MosquittoBroker
from device_node.errors import DeviceError
from device_node.link import DeviceLink
from device_node.pending import Outcome, PendingRequest
from edge_worker.runner import echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.frame import ModelInfo, encode_frame
from schemas.messages import TelemetryMessage
from splitmq.bench.errors import BenchError, BenchSettingsError
from splitmq.bench.raw_pingpong import measure_raw_rtt
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.reports import LatencyStats
from splitmq.worker_process import (
    ECHO_MODEL,
    connected,
    echo_worker_config,
    wait_until_serving,
    worker_process,
)
from splitmq_base.models import StrictModel

WORKER_ID = "bench-worker"
ECHO_SPLIT = 1  # a (64,) float32 tensor: the smallest frame the echo model takes


RTT_TARGET_P50_MS = 1.0
RTT_TARGET_P99_MS = 5.0


class TransportOptions(BenchOptions):
    rtt_requests: int = 2000
    warmup: int = 100
    burst_requests: int = 5000
    burst_devices: int = 10
    expiry_s: float = 120.0
    burst_timeout_s: float = 120.0
    worker_max_batch: int = 32
    worker_queue: int = 64
    worker_mode: Literal["process", "thread"] = "process"
    worker_start_s: float = 30.0

    @model_validator(mode="after")
    def _counts_positive(self) -> TransportOptions:
        if self.rtt_requests < 1 or self.burst_requests < 1 or self.burst_devices < 1:
            raise BenchSettingsError("request and device counts must be >= 1")
        return self


class Ratio(StrictModel):
    """The runtime's figure over the bare baseline's, at two percentiles (None: no figure)."""

    p50: float | None
    p99: float | None

    @classmethod
    def of(cls, measured: LatencyStats, baseline: LatencyStats) -> Ratio:
        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a and b else None

        return cls(
            p50=ratio(measured.p50_ms, baseline.p50_ms),
            p99=ratio(measured.p99_ms, baseline.p99_ms),
        )


class BurstSummary(StrictModel):
    devices: int
    requested: int
    sent: int
    answered: int
    lost: int
    per_s: float
    publish_per_s: float
    duration_s: float
    max_gap_ms: float
    outcomes: dict[str, int]
    device_errors: dict[str, str]


class TransportWorker(StrictModel):
    """The echo worker's settings and, where its telemetry came, its counters."""

    runner: str = "echo"
    mode: str
    max_batch: int
    max_wait_ms: float = 0.0
    queue_capacity: int
    served: int | None = None
    rejected: int | None = None
    expired: int | None = None
    errors: int | None = None


class TransportTargets(StrictModel):
    rtt_p50_ms: float = RTT_TARGET_P50_MS
    rtt_p99_ms: float = RTT_TARGET_P99_MS
    met: bool


class TransportReport(BenchReport):
    rtt_ms: LatencyStats
    raw_rtt_ms: LatencyStats
    overhead_ratio: Ratio
    rtt_stages: RttStages
    burst: BurstSummary
    worker: TransportWorker
    frame_bytes: int
    targets: TransportTargets


def run_transport_bench(
    options: TransportOptions, *, settings: BrokerSettings | None = None
) -> TransportReport:
    """Run both parts against `settings` (default: an embedded Mosquitto on a free port)."""
    with contextlib.ExitStack() as stack:
        if settings is None:
            broker = stack.enter_context(MosquittoBroker())
            settings = BrokerSettings(host=broker.host, port=broker.port)
        worker_exited = stack.enter_context(_echo_worker(options, settings))
        observer = stack.enter_context(
            connected(DeviceLink(settings, "bench-observer"), error=BenchError)
        )
        _wait_for_worker(observer, options.worker_start_s, worker_exited)
        info = echo_model_info(ECHO_MODEL)
        rtt, stages = measure_rtt(settings, info, options)
        raw = LatencyStats.of(
            measure_raw_rtt(
                settings,
                payload_bytes=len(_frame(info, "size-probe", "bench")),
                requests=options.rtt_requests,
                warmup=options.warmup,
            )
        )
        burst = measure_burst(settings, info, options)
        answered = options.warmup + rtt.count + burst.answered
        telemetry = _final_telemetry(observer, served_at_least=answered)
    met = _below(rtt.p50_ms, RTT_TARGET_P50_MS) and _below(rtt.p99_ms, RTT_TARGET_P99_MS)
    return TransportReport(
        provenance=Provenance.collect(options),
        rtt_ms=rtt,
        raw_rtt_ms=raw,
        overhead_ratio=Ratio.of(rtt, raw),
        rtt_stages=stages,
        burst=burst,
        worker=TransportWorker(
            mode=options.worker_mode,
            max_batch=options.worker_max_batch,
            queue_capacity=options.worker_queue,
            **telemetry,
        ),
        frame_bytes=len(_frame(info, "size-probe", "bench")),
        targets=TransportTargets(met=met and burst.lost == 0),
    )


def _below(value: float | None, target: float) -> bool:
    return value is not None and value < target


@contextlib.contextmanager
def _echo_worker(
    options: TransportOptions, settings: BrokerSettings
) -> Iterator[Callable[[], int | None]]:
    """The worker in its own process (as deployed: no GIL shared with the devices), or in
    this one (`worker_mode="thread"`). Yields a function that gives the worker process's exit
    code once it has exited (None while it runs)."""
    config = echo_worker_config(
        settings,
        worker_id=WORKER_ID,
        max_batch=options.worker_max_batch,
        queue_capacity=options.worker_queue,
    )
    if options.worker_mode == "thread":
        with EdgeWorker(config):
            yield lambda: None
        return
    with worker_process(config) as exited:
        yield exited


def _wait_for_worker(
    observer: DeviceLink, timeout_s: float, exited: Callable[[], int | None]
) -> None:
    wait_until_serving(
        lambda wait_s: observer.wait_for_worker(ECHO_MODEL, ECHO_SPLIT, wait_s),
        exited,
        timeout_s=timeout_s,
        error=BenchError,
        what="echo worker",
    )


def _final_telemetry(observer: DeviceLink, *, served_at_least: int) -> dict[str, int]:
    """The worker's counters from its telemetry, once they count every answered request
    (telemetry follows changes within 0.1 s and comes every second; give up after 5 s)."""

    def latest() -> TelemetryMessage | None:
        view = observer.workers().get(WORKER_ID)
        return view.telemetry if view is not None else None

    def counted_all() -> bool:
        telemetry = latest()
        return telemetry is not None and telemetry.served >= served_at_least

    observer.wait_for_workers(counted_all, 5.0)
    telemetry = latest()
    if telemetry is None:
        return {}
    return {
        "served": telemetry.served,
        "rejected": telemetry.rejected,
        "expired": telemetry.expired,
        "errors": telemetry.errors,
    }


def _frame(info: ModelInfo, request_id: str, device_id: str) -> bytes:
    tensor = np.linspace(-1.0, 1.0, num=info.split_shapes[ECHO_SPLIT][0], dtype=np.float32)
    return encode_frame(
        tensor,
        codec="lossless",
        request_id=request_id,
        model=info.name,
        fingerprint=info.fingerprint,
        split=ECHO_SPLIT,
        device_id=device_id,
    )


def _connected_link(settings: BrokerSettings, device_id: str) -> DeviceLink:
    link = DeviceLink(settings, device_id)
    try:
        return link.start(wait_s=10.0)
    except DeviceError as exc:
        raise BenchError(f"device {device_id} cannot connect: {exc}") from exc


# -- round trip -------------------------------------------------------------------------------


class RttStages(StrictModel):
    """Where a round trip's time goes, each a median over the timed round trips (ms): the
    device's frame encode and publish call, the worker's own timings from each reply (its
    queue: the hand-off from paho's thread to the compute thread; decode; tail), and the rest:
    both trips through the broker, the reply's build and hand-off back to paho's thread, and
    the device's parse of it."""

    device_encode_ms: float
    device_publish_ms: float
    worker_queue_ms: float
    worker_decode_ms: float
    worker_compute_ms: float
    rest_ms: float


@dataclass
class _RoundTrips:
    samples: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)

    def add(self, total_ms: float, **parts: float) -> None:
        self.samples.append(total_ms)
        for name, ms in parts.items():
            self.parts.setdefault(name, []).append(ms)
        self.parts.setdefault("rest_ms", []).append(total_ms - sum(parts.values()))

    def stages(self) -> RttStages:
        return RttStages(**{name: statistics.median(v) for name, v in self.parts.items()})


def measure_rtt(
    settings: BrokerSettings, info: ModelInfo, options: TransportOptions
) -> tuple[LatencyStats, RttStages]:
    link = _connected_link(settings, "rtt-device")
    trips = _RoundTrips()
    try:
        for i in range(options.warmup + options.rtt_requests):
            started = link.clock()
            request_id = f"rtt-{i}"
            frame = _frame(info, request_id, link.device_id)
            encoded = link.clock()
            pending = link.publish_request(
                frame,
                request_id=request_id,
                model=info.name,
                split=ECHO_SPLIT,
                expiry_s=options.expiry_s,
            )
            published = link.clock()
            outcome = pending.future.result(timeout=10.0)
            message = outcome.message
            if message is None or message.status != "ok" or message.timings is None:
                raise BenchError(f"round trip {i} failed: {_describe(outcome)}")
            if i >= options.warmup:
                trips.add(
                    (outcome.received_at - started) * 1000.0,
                    device_encode_ms=(encoded - started) * 1000.0,
                    device_publish_ms=(published - encoded) * 1000.0,
                    worker_queue_ms=message.timings.queue_ms,
                    worker_decode_ms=message.timings.decode_ms,
                    worker_compute_ms=message.timings.compute_ms,
                )
    finally:
        link.stop()
    return LatencyStats.of(trips.samples), trips.stages()


# -- burst ------------------------------------------------------------------------------------


@dataclass
class _DeviceBurst:
    link: DeviceLink
    count: int
    pending: list[PendingRequest]
    publish_failures: int = 0
    error: str | None = None


def measure_burst(
    settings: BrokerSettings, info: ModelInfo, options: TransportOptions
) -> BurstSummary:
    counts = _share(options.burst_requests, options.burst_devices)
    devices = [
        _DeviceBurst(_connected_link(settings, f"burst-{d}"), count, [])
        for d, count in enumerate(counts)
    ]
    go = threading.Event()
    threads = [
        threading.Thread(target=_publish_all, args=(device, info, options, go), daemon=True)
        for device in devices
    ]
    try:
        for thread in threads:
            thread.start()
        started = time.monotonic()
        go.set()
        for thread in threads:
            thread.join()
        published_s = time.monotonic() - started
        outcomes = _collect(devices, started + options.burst_timeout_s)
    finally:
        for device in devices:
            device.link.stop()
    return _burst_summary(devices, outcomes, started, published_s)


def _share(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _publish_all(
    device: _DeviceBurst, info: ModelInfo, options: TransportOptions, go: threading.Event
) -> None:
    go.wait()
    link = device.link
    try:
        for i in range(device.count):
            request_id = f"{link.device_id}-{i}"
            device.pending.append(
                link.publish_request(
                    _frame(info, request_id, link.device_id),
                    request_id=request_id,
                    model=info.name,
                    split=ECHO_SPLIT,
                    expiry_s=options.expiry_s,
                )
            )
    except Exception as exc:  # counted: every request not published is lost
        device.error = f"{type(exc).__name__}: {exc}"


def _collect(devices: list[_DeviceBurst], deadline: float) -> list[Outcome | None]:
    outcomes: list[Outcome | None] = []
    for device in devices:
        for pending in device.pending:
            try:
                outcomes.append(
                    pending.future.result(timeout=max(0.0, deadline - time.monotonic()))
                )
            except TimeoutError:
                outcomes.append(None)
    return outcomes


def _burst_summary(
    devices: list[_DeviceBurst], outcomes: list[Outcome | None], started: float, published_s: float
) -> BurstSummary:
    requested = sum(device.count for device in devices)
    sent = sum(len(device.pending) for device in devices)
    ok = [
        o for o in outcomes if o is not None and o.message is not None and o.message.status == "ok"
    ]
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        key = "no_reply" if outcome is None else _describe(outcome)
        statuses[key] = statuses.get(key, 0) + 1
    arrivals = sorted(o.received_at for o in ok)
    span_s = (arrivals[-1] - started) if arrivals else 0.0
    gaps = np.diff(arrivals) * 1000.0 if len(arrivals) > 1 else np.zeros(1)
    return BurstSummary(
        devices=len(devices),
        requested=requested,
        sent=sent,
        answered=len(ok),
        lost=requested - len(ok),
        per_s=len(ok) / span_s if span_s > 0 else 0.0,
        publish_per_s=sent / published_s if published_s > 0 else 0.0,
        duration_s=span_s,
        max_gap_ms=float(gaps.max()),
        outcomes=statuses,
        device_errors={d.link.device_id: d.error for d in devices if d.error},
    )


def _describe(outcome: Outcome) -> str:
    if outcome.message is not None:
        return outcome.message.status
    return outcome.failure or "unknown"


# -- output -----------------------------------------------------------------------------------


def format_table(result: TransportReport) -> str:
    burst, ratio = result.burst, result.overhead_ratio
    return "\n".join(
        [
            f"transport benchmark (echo tail, {result.frame_bytes}-byte frames, loopback)",
            "",
            "round trip, ms        p50      p90      p99     mean      max       n",
            _rtt_row("runtime", result.rtt_ms),
            _rtt_row("bare paho", result.raw_rtt_ms),
            f"overhead ratio   {_num(ratio.p50, 8, 2)}          {_num(ratio.p99, 8, 2)}",
            _stages_line(result.rtt_stages),
            "",
            "burst        devices     sent answered     lost    per_s  max gap ms",
            f"             {burst.devices:7d} {burst.sent:8d} {burst.answered:8d} "
            f"{burst.lost:8d} {burst.per_s:8.0f} {burst.max_gap_ms:11.1f}",
            f"  outcomes: {burst.outcomes}",
            f"  targets met: {result.targets.met}",
        ]
    )


def _stages_line(stages: RttStages) -> str:
    parts = ", ".join(
        f"{name.removesuffix('_ms').replace('_', ' ')} {ms:.3f}"
        for name, ms in stages.model_dump().items()
    )
    return f"round trip p50 by stage, ms: {parts}"


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def _rtt_row(name: str, rtt: LatencyStats) -> str:
    cells = (rtt.p50_ms, rtt.p90_ms, rtt.p99_ms, rtt.mean_ms, rtt.max_ms)
    return f"{name:<17}" + " ".join(_num(v, 8, 3) for v in cells) + f" {rtt.count:7d}"
