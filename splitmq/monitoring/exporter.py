"""Prometheus metrics of a fleet, collected from a `FleetWatcher` at every scrape.

Names follow Prometheus conventions: base units (seconds, bytes), `_total` on counters, labels
`worker`, `device`, `model`, `split`. Broker figures are named like the common Mosquitto
exporters (`broker_clients_connected`, `broker_messages_received_total`, ...).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from schemas.messages import DeviceStateMessage, LatencyHistogram, TelemetryMessage
from splitmq.monitoring.fleet import FleetSnapshot, FleetWatcher

# Gauge names carry no `_total` or `_count`: promtool reserves those for counters and histograms.
BROKER_GAUGES = {
    "clients_connected": ("broker_clients_connected", "clients connected now"),
    "clients_total": ("broker_clients_known", "clients connected or with a kept session"),
    "messages_stored": ("broker_messages_stored", "messages held by the broker"),
    "retained_messages": ("broker_retained_messages", "retained messages"),
    "subscriptions": ("broker_subscriptions", "active subscriptions"),
    "uptime_seconds": ("broker_uptime_seconds", "seconds since the broker started"),
}
BROKER_COUNTERS = {
    "messages_received": ("broker_messages_received", "MQTT messages received"),
    "messages_sent": ("broker_messages_sent", "MQTT messages sent"),
    "bytes_received": ("broker_bytes_received", "bytes received"),
    "bytes_sent": ("broker_bytes_sent", "bytes sent"),
    "publish_dropped": ("broker_publish_messages_dropped", "publishes dropped (queues full)"),
}
WORKER_OUTCOMES = ("served", "rejected", "expired", "errors")


class FleetCollector(Collector):
    """Turns one fleet snapshot into metric families, at scrape time."""

    def __init__(self, watcher: FleetWatcher) -> None:
        self.watcher = watcher

    def collect(self) -> Iterator[Metric]:
        snapshot = self.watcher.snapshot()
        yield from _worker_metrics(snapshot)
        yield from _device_metrics(snapshot)
        yield from _broker_metrics(snapshot)
        dropped = CounterMetricFamily(
            "splitmq_monitor_dropped_messages", "messages refused (malformed, spoofed, too many)"
        )
        dropped.add_metric([], self.watcher.dropped)
        yield dropped


def _worker_metrics(snapshot: FleetSnapshot) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "splitmq_worker_up", "1 while the worker's status is online", labels=["worker"]
    )
    gauges = {
        "queue_depth": GaugeMetricFamily(
            "splitmq_queue_depth", "requests queued at the worker", labels=["worker"]
        ),
        "queue_capacity": GaugeMetricFamily(
            "splitmq_queue_capacity", "requests the worker holds at most", labels=["worker"]
        ),
        "in_flight": GaugeMetricFamily(
            "splitmq_in_flight", "requests in the running batch", labels=["worker"]
        ),
        "batch_size": GaugeMetricFamily(
            "splitmq_batch_size_mean", "recent mean batch size", labels=["worker"]
        ),
        "utilization": GaugeMetricFamily(
            "splitmq_worker_utilization_ratio", "busy fraction of recent time", labels=["worker"]
        ),
        "throughput_rps": GaugeMetricFamily(
            "splitmq_worker_throughput_requests_per_second",
            "requests served per second, recently",
            labels=["worker"],
        ),
    }
    outcomes = CounterMetricFamily(
        "splitmq_worker_requests",
        "requests a worker finished, by outcome",
        labels=["worker", "outcome"],
    )
    service = GaugeMetricFamily(
        "splitmq_worker_service_seconds",
        "moving average of one tail call (a batch) per model and split",
        labels=["worker", "model", "split"],
    )
    for worker_id, view in sorted(snapshot.workers.items()):
        if view.online is not None:
            up.add_metric([worker_id], float(view.online))
        telemetry: TelemetryMessage | None = view.telemetry
        if telemetry is None:
            continue
        for name, family in gauges.items():
            family.add_metric([worker_id], float(getattr(telemetry, name)))
        for outcome in WORKER_OUTCOMES:
            outcomes.add_metric([worker_id, outcome], getattr(telemetry, outcome))
        for model, splits in sorted(telemetry.service_ms.items()):
            for split, ms in sorted(splits.items()):
                service.add_metric([worker_id, model, str(split)], ms / 1000.0)
    yield up
    yield from gauges.values()
    yield outcomes
    yield service


def _device_metrics(snapshot: FleetSnapshot) -> Iterator[Metric]:
    labels = ["device", "model"]
    up = GaugeMetricFamily(
        "splitmq_device_up", "1 while the device's status is online", labels=["device"]
    )
    requests = CounterMetricFamily(
        "splitmq_requests", "requests a device finished, by outcome", labels=[*labels, "outcome"]
    )
    fallbacks = CounterMetricFamily(
        "splitmq_fallbacks",
        "offloads that ran on the device instead, by reason",
        labels=[*labels, "reason"],
    )
    sent = CounterMetricFamily(
        "splitmq_sent_bytes", "request bytes a device published", labels=labels
    )
    ratio = GaugeMetricFamily(
        "splitmq_offload_ratio", "share of requests a worker answered", labels=labels
    )
    uplink = GaugeMetricFamily(
        "splitmq_uplink_estimate_bytes_per_second",
        "the chooser's latest uplink estimate",
        labels=labels,
    )
    split = GaugeMetricFamily("splitmq_last_split", "split of the latest request", labels=labels)
    duration = HistogramMetricFamily(
        "splitmq_request_duration_seconds", "end-to-end latency of a request", labels=labels
    )
    for device_id, view in sorted(snapshot.devices.items()):
        if view.online is not None:
            up.add_metric([device_id], float(view.online))
        state: DeviceStateMessage | None = view.state
        if state is None:
            continue
        key = [device_id, state.model]
        local = max(0, state.requests - state.offloaded - state.fallbacks)
        for outcome, count in (
            ("offloaded", state.offloaded),
            ("local", local),
            ("fallback", state.fallbacks),
        ):
            requests.add_metric([*key, outcome], count)
        for reason, count in sorted(state.fallback_reasons.items()):
            fallbacks.add_metric([*key, reason], count)
        sent.add_metric(key, state.bytes_sent)
        ratio.add_metric(key, state.offload_ratio)
        if state.uplink_bps is not None:
            uplink.add_metric(key, state.uplink_bps / 8.0)
        if state.last is not None:
            split.add_metric(key, state.last.split)
        duration.add_metric(key, _seconds_buckets(state.latency), state.latency.sum_ms / 1000.0)
    yield from (up, requests, fallbacks, sent, ratio, uplink, split, duration)


def _seconds_buckets(histogram: LatencyHistogram) -> list[tuple[str, float]]:
    """Prometheus's cumulative buckets, in seconds with +Inf last, of a device's ms ones."""
    buckets: list[tuple[str, float]] = [
        (f"{le / 1000.0:g}", count)
        for le, count in zip(histogram.le_ms, histogram.counts, strict=True)
    ]
    buckets.append(("+Inf", histogram.count))
    return buckets


def _broker_metrics(snapshot: FleetSnapshot) -> Iterator[Metric]:
    broker = snapshot.broker
    for key, (name, doc) in BROKER_GAUGES.items():
        if key in broker.gauges:
            yield GaugeMetricFamily(name, doc, value=broker.gauges[key])
    for key, (name, doc) in BROKER_COUNTERS.items():
        if key in broker.counters:
            yield CounterMetricFamily(name, doc, value=broker.counters[key])
