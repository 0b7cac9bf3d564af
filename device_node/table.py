"""A fixed-width live table of result records (the device CLI and the demo print it)."""

from __future__ import annotations

from dataclasses import dataclass

from device_node.records import ResultRecord


@dataclass(frozen=True)
class Column:
    title: str
    width: int
    left: bool = False


COLUMNS = (
    Column("req", 5, left=True),
    Column("device", 8, left=True),
    Column("k", 3),
    Column("where", 18, left=True),
    Column("bytes", 7),
    Column("head", 6),
    Column("enc", 5),
    Column("uplink", 6),
    Column("queue", 6),
    Column("dec", 5),
    Column("comp", 6),
    Column("tail", 6),
    Column("other", 6),
    Column("total", 7),
    Column("pred", 6),
    Column("prediction", 30, left=True),
)


def _cell(text: str, column: Column) -> str:
    text = text if len(text) <= column.width else text[: column.width - 1] + "~"
    return text.ljust(column.width) if column.left else text.rjust(column.width)


def _line(cells: list[str]) -> str:
    return " ".join(_cell(text, col) for text, col in zip(cells, COLUMNS, strict=True)).rstrip()


def header() -> str:
    """Column titles, then a rule; times are in ms ("pred": the chooser's prediction)."""
    titles = _line([c.title for c in COLUMNS])
    return titles + "\n" + "-" * len(titles) + "   (times in ms)"


def where(record: ResultRecord) -> str:
    if record.offloaded:
        return f"edge {record.worker_id or ''}".strip()
    if record.fallback is not None:
        return f"local ({record.fallback_label()})"
    return "local"


def row(record: ResultRecord) -> str:
    parts = record.latency
    ms = [
        parts.head_ms,
        parts.encode_ms,
        parts.uplink_ms,
        parts.queue_ms,
        parts.decode_ms,
        parts.compute_ms,
        parts.local_tail_ms,
        parts.other_ms,
        record.total_ms,
    ]
    top1 = record.top1
    return _line(
        [
            _short_id(record),
            record.device_id,
            str(record.split),
            where(record),
            str(record.bytes_sent),
            *[f"{value:.1f}" for value in ms],
            "-" if record.predicted_ms is None else f"{record.predicted_ms:.0f}",
            f"{top1.label} {top1.score:.2f}",
        ]
    )


def _short_id(record: ResultRecord) -> str:
    """`<device>-<session>-<seq>` -> `#<seq>`: the device has its own column."""
    return "#" + record.request_id.rsplit("-", 1)[-1]
