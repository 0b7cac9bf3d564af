"""The fleet as plain data (`--json`) and as rich tables (the terminal monitor)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from rich.console import Group
from rich.table import Table

from splitmq.monitoring.fleet import DeviceView, FleetSnapshot, WorkerView

RATE_NAMES = ("messages_received", "messages_sent", "bytes_received", "bytes_sent")


def snapshot_dict(snapshot: FleetSnapshot, now: float | None = None) -> dict[str, Any]:
    """A JSON-ready summary: workers, devices and broker figures, ages in seconds."""
    now = time.monotonic() if now is None else now
    return {
        "taken_at": snapshot.taken_at,
        "workers": [_worker(view, now) for _, view in sorted(snapshot.workers.items())],
        "devices": [_device(view, now) for _, view in sorted(snapshot.devices.items())],
        "broker": {
            **snapshot.broker.gauges,
            **{f"{name}_total": value for name, value in snapshot.broker.counters.items()},
            **{f"{name}_per_s": value for name, value in snapshot.broker.rates.items()},
        },
    }


def _age(view: WorkerView | DeviceView, now: float) -> float | None:
    return None if view.received_at is None else round(max(0.0, now - view.received_at), 3)


def _worker(view: WorkerView, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {"worker": view.node_id, "online": view.online, "age_s": _age(view, now)}
    t = view.telemetry
    if t is not None:
        row.update(
            device=t.device,
            models={model: list(splits) for model, splits in t.models.items()},
            queue_depth=t.queue_depth,
            queue_capacity=t.queue_capacity,
            in_flight=t.in_flight,
            batch_size=t.batch_size,
            utilization=t.utilization,
            throughput_rps=t.throughput_rps,
            served=t.served,
            rejected=t.rejected,
            expired=t.expired,
            errors=t.errors,
        )
    return row


def _device(view: DeviceView, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {"device": view.node_id, "online": view.online, "age_s": _age(view, now)}
    s = view.state
    if s is not None:
        latencies = [r.total_ms for r in s.recent]
        row.update(
            model=s.model,
            requests=s.requests,
            offloaded=s.offloaded,
            offload_ratio=s.offload_ratio,
            fallbacks=s.fallbacks,
            fallback_reasons=dict(s.fallback_reasons),
            bytes_sent=s.bytes_sent,
            uplink_bps=s.uplink_bps,
            recent_splits=[r.split for r in s.recent],
            recent_fallbacks=[r.fallback for r in s.recent if r.fallback],
            latency_p50_ms=statistics.median(latencies) if latencies else None,
            latency_max_ms=max(latencies) if latencies else None,
            last=s.last.model_dump() if s.last else None,
        )
    return row


def render(snapshot: FleetSnapshot, now: float | None = None) -> Group:
    """Three tables: workers, devices, broker."""
    data = snapshot_dict(snapshot, now)
    return Group(_workers_table(data["workers"]), _devices_table(data["devices"]),
                 _broker_table(data["broker"]))  # fmt: skip


def _workers_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Workers", title_justify="left", expand=True)
    for column in ("worker", "up", "on", "queue", "batch", "util", "req/s", "served",
                   "rejected", "expired", "age"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("worker", "on") else "right")
    for row in rows:
        table.add_row(
            row["worker"], _up(row["online"]), row.get("device", "-"),
            _of(row, "queue_depth", "queue_capacity"), _num(row.get("batch_size"), 2),
            _pct(row.get("utilization")), _num(row.get("throughput_rps"), 1),
            _num(row.get("served")), _num(row.get("rejected")), _num(row.get("expired")),
            _secs(row["age_s"]),
        )  # fmt: skip
    return table


def _devices_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Devices", title_justify="left", expand=True)
    for column in ("device", "up", "requests", "offload", "fallbacks", "uplink", "p50 ms",
                   "recent splits", "last"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("device", "recent splits", "last")
                         else "right")  # fmt: skip
    for row in rows:
        last = row.get("last")
        table.add_row(
            row["device"], _up(row["online"]), _num(row.get("requests")),
            _pct(row.get("offload_ratio")), _num(row.get("fallbacks")),
            _rate(row.get("uplink_bps")), _num(row.get("latency_p50_ms"), 1),
            " ".join(str(k) for k in row.get("recent_splits", [])[-10:]) or "-",
            f"{last['label']} ({last['score']:.2f}) {last['total_ms']:.0f} ms" if last else "-",
        )  # fmt: skip
    return table


def _broker_table(broker: dict[str, Any]) -> Table:
    table = Table(title="Broker ($SYS)", title_justify="left", expand=True)
    for column in ("clients", "msg in/s", "msg out/s", "bytes in/s", "bytes out/s", "dropped",
                   "stored", "retained", "subscriptions"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_row(
        _num(broker.get("clients_connected")),
        *(_num(broker.get(f"{name}_per_s"), 1) for name in RATE_NAMES),
        _num(broker.get("publish_dropped_total")), _num(broker.get("messages_stored")),
        _num(broker.get("retained_messages")), _num(broker.get("subscriptions")),
    )  # fmt: skip
    return table


def _up(online: bool | None) -> str:
    return {True: "[green]online[/]", False: "[red]offline[/]", None: "?"}[online]


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _of(row: dict[str, Any], part: str, whole: str) -> str:
    return f"{row[part]}/{row[whole]}" if part in row else "-"


def _rate(bps: float | None) -> str:
    return "-" if bps is None else f"{bps / 1e6:.2f} Mbit/s"
