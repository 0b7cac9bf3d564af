"""The demo: an embedded Mosquitto, one edge worker and N device nodes, all on this machine.

Each device classifies real sample images, one request after another, and every record is
printed as it arrives; the summary (also written as JSON) counts requests, results, lost
requests (requests without a result), offloads and local fallbacks, and latency percentiles.

The broker is a real `mosquitto` process on a free port; the worker and the devices run in
this process, each with its own MQTT connection and threads. With a trace, each device talks to
the broker through its own trace-driven shaper (`device_node.shaper`), which emulates a cellular
uplink on the device -> broker direction.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch

from broker.launcher import MosquittoBroker
from device_node import table
from device_node.judgement import judge
from device_node.node import DeviceNode
from device_node.records import ResultRecord
from device_node.runtime import build_device, shaped_uplink
from device_node.sources import CyclingSource, SourceImage, sample_source_images
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitmq.demo_config import DemoError, DemoOptions, device_config, worker_config
from splitmq.reports import LatencyStats, latency_stats
from splitting.registry import load_model
from splitting.torch_blocks import TorchBlocks


@dataclass
class DemoRun:
    """What the demo collected."""

    options: DemoOptions
    records: list[ResultRecord] = field(default_factory=list)
    device_errors: dict[str, str] = field(default_factory=dict)
    late_results: int = 0
    probes: int = 0
    wall_s: float = 0.0
    worker: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False  # Ctrl-C: the devices finished the requests they had started


class _LivePrinter:
    """Prints records from several device threads, one whole line at a time."""

    def __init__(self, out: TextIO, *, quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self.lock = threading.Lock()
        self.rows = 0

    def __call__(self, record: ResultRecord) -> None:
        if self.quiet:
            return
        with self.lock:
            if self.rows % 40 == 0:
                print(table.header(), file=self.out)
            print(table.row(record), file=self.out, flush=True)
            self.rows += 1


def run_demo(options: DemoOptions, *, out: TextIO | None = None) -> DemoRun:
    """Start everything, run the devices to completion, stop everything (prints to `out`,
    default stdout)."""
    out = out or sys.stdout
    if options.torch_threads is not None:
        torch.set_num_threads(options.torch_threads)
    _say(out, f"loading {options.model} ...")
    device_model = TorchBlocks(load_model(options.model))
    images = sample_source_images()
    run = DemoRun(options)
    with MosquittoBroker() as broker:
        _say(out, f"broker: mosquitto on {broker.host}:{broker.port}")
        with _edge_worker(options, broker) as worker:
            _say(out, f"worker: {worker.config.worker_id} serving {options.model}")
            started = time.monotonic()
            _run_devices(options, broker, device_model, images, run, out)
            run.wall_s = time.monotonic() - started
            run.worker = _worker_stats(worker)
    return run


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


# -- the worker -------------------------------------------------------------------------------


@contextlib.contextmanager
def _edge_worker(options: DemoOptions, broker: MosquittoBroker) -> Iterator[EdgeWorker]:
    settings = BrokerSettings(host=broker.host, port=broker.port, reconnect_max_delay_s=2)
    worker = EdgeWorker(worker_config(options, settings))
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def _worker_stats(worker: EdgeWorker) -> dict[str, Any]:
    snapshot = worker.stats.snapshot()
    return {
        "served": snapshot.served,
        "rejected": snapshot.rejected,
        "expired": snapshot.expired,
        "errors": snapshot.errors,
        "batch_size_ewma": snapshot.batch_size,
        "service_ms": snapshot.service_ms,
    }


# -- the devices ------------------------------------------------------------------------------


def _run_devices(
    options: DemoOptions,
    broker: MosquittoBroker,
    model: TorchBlocks,
    images: list[SourceImage],
    run: DemoRun,
    out: TextIO,
) -> None:
    settings = BrokerSettings(host=broker.host, port=broker.port, reconnect_max_delay_s=2)
    printer = _LivePrinter(out, quiet=options.quiet)
    lock = threading.Lock()
    with contextlib.ExitStack() as stack:
        nodes = []
        for i in range(options.devices):
            # With a trace, each device gets its own shaped uplink to the broker.
            config = stack.enter_context(shaped_uplink(device_config(options, i + 1, settings)))
            nodes.append(stack.enter_context(build_device(config, model=model)))
        if options.trace is not None:
            _say(out, f"uplink: every device shaped by the trace {options.trace}")
        _wait_for_worker(nodes, options.worker_wait_s)
        if options.warm_up:
            _say(out, "warming up: one uncounted request per device (first calls are slow)")
            for node in nodes:
                node.run_request(images[0], request_id=f"{node.config.device_id}-warmup")
        stop = threading.Event()
        finished = [threading.Event() for _ in nodes]
        threads = [
            threading.Thread(
                target=_device_loop,
                # Each device walks the samples from its own starting point.
                args=(node, CyclingSource(images, start=7 * i), options, printer, run, lock, stop),
                kwargs={"finished": finished[i]},
                name=node.config.device_id,
            )
            for i, node in enumerate(nodes)
        ]
        for thread in threads:
            thread.start()
        _wait_until_done_or_interrupted(finished, stop, run)
        for thread in threads:
            thread.join()
    run.late_results = sum(node.link.counters.late_results for node in nodes)
    run.probes = sum(node.link.counters.probes for node in nodes)


def _wait_for_worker(nodes: list[DeviceNode], timeout_s: float) -> None:
    """Start only once every device sees a live worker for its model, so the first requests
    measure offloading, not the worker's start-up."""
    deadline = time.monotonic() + timeout_s
    for node in nodes:
        left = max(0.0, deadline - time.monotonic())
        if not node.link.wait_for_worker(node.model.name, None, left):
            raise DemoError(
                f"{node.config.device_id}: no worker serving {node.model.name} "
                f"appeared within {timeout_s:g} s"
            )


def _wait_until_done_or_interrupted(
    finished: list[threading.Event], stop: threading.Event, run: DemoRun
) -> None:
    """Wait for the devices; on Ctrl-C, let each finish the request it has started (one record
    each) and stop, so the summary covers what ran. A second Ctrl-C stops at once. The waits
    are on events the loops set, not on `Thread.join`: a join that Ctrl-C interrupted could
    return early on Python 3.11 (measured: 1 run in 6 stopped a device's link mid-request)."""
    try:
        for done in finished:
            done.wait()
    except KeyboardInterrupt:
        run.interrupted = True
        stop.set()
        for done in finished:
            done.wait()


def _device_loop(
    node: DeviceNode,
    source: CyclingSource,
    options: DemoOptions,
    printer: _LivePrinter,
    run: DemoRun,
    lock: threading.Lock,
    stop: threading.Event,
    *,
    finished: threading.Event,
) -> None:
    def keep(record: ResultRecord) -> None:
        with lock:
            run.records.append(record)
        printer(record)

    try:
        node.run(
            source,
            requests=options.requests,
            rate_hz=options.rate_hz,
            on_record=keep,
            should_stop=stop.is_set,
        )
    except Exception as exc:  # a device that dies counts its unanswered requests as lost
        with lock:
            run.device_errors[node.config.device_id] = f"{type(exc).__name__}: {exc}"
    finally:
        finished.set()


# -- the summary ------------------------------------------------------------------------------


def summarize(run: DemoRun) -> dict[str, Any]:
    """The demo's summary: the keys of the issue plus what helps to read them."""
    options = run.options
    records = run.records
    unique_ids = {r.request_id for r in records}
    # Interrupted, the devices stopped asking: every request they started was asked for.
    requested = len(unique_ids) if run.interrupted else options.devices * options.requests
    totals = [r.total_ms for r in records]
    offloaded = [r for r in records if r.offloaded]
    fallbacks = [r for r in records if r.fallback is not None]
    return {
        "requests": requested,
        "interrupted": run.interrupted,
        "results": len(unique_ids),
        "lost": requested - len(unique_ids),
        "duplicates": len(records) - len(unique_ids),
        "offloaded": len(offloaded),
        "local_fallback": len(fallbacks),
        "local_by_choice": len(records) - len(offloaded) - len(fallbacks),
        "fallback_reasons": dict(Counter(r.fallback_label() for r in fallbacks)),
        "latency_ms": latency_stats(totals),
        "offloaded_parts_ms": _mean_parts(offloaded),
        "prediction": _prediction_summary(records),
        "local_vs_offloaded_ms": _local_vs_offloaded(records),
        "judgement": {device: j.to_dict(device) for device, j in judge(records).items()},
        "splits": {str(k): n for k, n in sorted(Counter(r.split for r in records).items())},
        "bytes_sent_mean": statistics.fmean([r.bytes_sent for r in offloaded]) if offloaded else 0,
        "late_results_dropped": run.late_results,
        "probes": run.probes,
        "device_errors": run.device_errors,
        "devices": options.devices,
        "requests_per_device": options.requests,
        "model": options.model,
        "codec": options.codec,
        "policy": options.policy,
        "split": options.split,
        "slowdown": options.slowdown,
        "trace": str(options.trace) if options.trace else None,
        "wall_s": run.wall_s,
        "worker": run.worker,
        "records": [r.to_dict() for r in records],
    }


def _prediction_summary(records: list[ResultRecord]) -> dict[str, Any]:
    """How the chooser's predictions compared with what the requests took."""
    pairs = [(r.predicted_ms, r.total_ms) for r in records if r.predicted_ms]
    if not pairs:
        return {"requests": 0}
    errors = [actual - predicted for predicted, actual in pairs]
    absolute = LatencyStats.of(abs(e) for e in errors)
    return {
        "requests": len(pairs),
        "error_ms_p50": LatencyStats.of(errors).p50_ms,
        "abs_error_ms_p50": absolute.p50_ms,
        "abs_error_ms_p95": absolute.p95_ms,
    }


def _local_vs_offloaded(records: list[ResultRecord]) -> dict[str, dict[str, float | None]]:
    """Per device: mean latency of the requests it chose to run here, and of its offloads
    (a good chooser stays local only where that is faster)."""
    table: dict[str, dict[str, float | None]] = {}
    for device in sorted({r.device_id for r in records}):
        mine = [r for r in records if r.device_id == device]
        local = [r.total_ms for r in mine if not r.offloaded and r.fallback is None]
        remote = [r.total_ms for r in mine if r.offloaded]
        table[device] = {
            "local_by_choice_mean": statistics.fmean(local) if local else None,
            "offloaded_mean": statistics.fmean(remote) if remote else None,
        }
    return table


def _mean_parts(records: list[ResultRecord]) -> dict[str, float]:
    if not records:
        return {}
    names = list(records[0].latency.__dataclass_fields__)
    return {name: statistics.fmean(getattr(r.latency, name) for r in records) for name in names}


def format_summary(summary: dict[str, Any]) -> str:
    latency = summary["latency_ms"]
    lines = [
        "",
        "summary",
        f"  requests        {summary['requests']}",
        f"  results         {summary['results']}",
        f"  lost            {summary['lost']}",
        f"  offloaded       {summary['offloaded']}",
        f"  local_fallback  {summary['local_fallback']}"
        + (f"  {summary['fallback_reasons']}" if summary["fallback_reasons"] else ""),
        f"  local (chosen)  {summary['local_by_choice']}",
        f"  splits          {summary['splits']}",
    ]
    if latency["count"]:
        lines.append(
            f"  latency ms      p50 {latency['p50_ms']:.1f}  p95 {latency['p95_ms']:.1f}  "
            f"mean {latency['mean_ms']:.1f}  max {latency['max_ms']:.1f}"
        )
    if summary["offloaded_parts_ms"]:
        parts = "  ".join(
            f"{name.removesuffix('_ms')} {value:.1f}"
            for name, value in summary["offloaded_parts_ms"].items()
        )
        lines.append(f"  offloaded, mean ms: {parts}")
    prediction = summary["prediction"]
    if prediction["requests"]:
        lines.append(
            f"  predicted vs actual: |error| p50 {prediction['abs_error_ms_p50']:.1f} ms, "
            f"p95 {prediction['abs_error_ms_p95']:.1f} ms over {prediction['requests']} requests "
            "(per request: the table's pred and total)"
        )
    for device, means in summary["local_vs_offloaded_ms"].items():
        local, remote = means["local_by_choice_mean"], means["offloaded_mean"]
        if local is not None and remote is not None:
            lines.append(f"  {device}: local by choice {local:.1f} ms, offloaded {remote:.1f} ms")
    lines.extend(f"  {judgement['line']}" for judgement in summary["judgement"].values())
    for device, error in summary["device_errors"].items():
        lines.append(f"  device {device} failed: {error}")
    return "\n".join(lines)
