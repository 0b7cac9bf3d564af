"""The one record every request ends with, whether the server or the device computed it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Fallback(StrEnum):
    """Why a request that was meant for the server ran its tail on the device instead.

    The values are the strings a result record's `fallback` has always held; what varies
    (the worker's error code, the broker's reason code) goes in the record's `fallback_detail`.
    """

    NO_WORKER = "no_worker"  # no live worker serves this model and split
    NOT_CONNECTED = "not_connected"  # the link was down when the request was to be published
    TIMEOUT = "timeout"  # no result before the deadline
    DISCONNECTED = "disconnected"  # the link went down while waiting
    WORKER_LOST = "worker_lost"  # every worker of the split went offline while waiting
    ERROR_REPLY = "error_reply"  # the worker answered with an error (detail: its code)
    EXPIRED = "expired"  # the worker found the request stale
    REJECTED = "rejected"  # the worker refused it (full queue, unknown split, ...)
    REFUSED = "refused"  # the broker refused the publish (detail: the PUBACK reason code)
    ENCODE_ERROR = "encode_error"  # the codec refused the intermediate (detail: why)
    OVERSIZED = "oversized"  # the frame is over the site's frame limit, never sent (detail: sizes)
    BAD_REPLY = "bad_reply"  # the worker answered "ok" without any prediction
    RACE_WON_HERE = "race_won_here"  # raced: the device's own tail finished first

    def label(self, detail: str = "") -> str:
        """The reason as the device's state message and console table show it: an error reply
        or a broker refusal keeps its code (`error_reply:<code>`), which operators group by."""
        if detail and self in (Fallback.ERROR_REPLY, Fallback.REFUSED):
            return f"{self.value}:{detail}"
        return self.value


#: `ResultRecord.extra` key: ms of tail blocks the device computed while racing the server (they
#: overlap the server's work, so they are not a latency part, but they cost the device energy).
RACE_LOCAL_MS = "race_local_ms"


@dataclass(frozen=True)
class PredictionRecord:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class LatencyParts:
    """Where a request's time went, in milliseconds.

    `uplink_ms` is publish hand-over to the broker's PUBACK; `queue_ms`, `decode_ms` and
    `compute_ms` come from the worker's reply; `other_ms` is what remains of the total
    (broker routing, the reply's way back, waiting), so the parts add up to `total_ms`. On a
    slow link the PUBACK's way back overlaps the worker's compute; `other_ms` is then 0 and the
    parts add up to a little more than the total.
    """

    head_ms: float = 0.0
    encode_ms: float = 0.0
    uplink_ms: float = 0.0
    queue_ms: float = 0.0
    decode_ms: float = 0.0
    compute_ms: float = 0.0
    local_tail_ms: float = 0.0
    other_ms: float = 0.0

    def accounted_ms(self) -> float:
        return (
            self.head_ms
            + self.encode_ms
            + self.uplink_ms
            + self.queue_ms
            + self.decode_ms
            + self.compute_ms
            + self.local_tail_ms
        )


@dataclass(frozen=True)
class ResultRecord:
    """The outcome of one request.

    `split` is the split the request ended at: the chosen k when offloaded; when run locally
    from the start (policy chose n, or no worker) it is n. `fallback` names why an intended
    offload ran locally (None otherwise) and `fallback_detail` says more where there is more
    to say (the worker's error code, the codec's complaint), "" otherwise.
    """

    request_id: str
    device_id: str
    image: str
    split: int
    offloaded: bool
    fallback: Fallback | None
    bytes_sent: int
    latency: LatencyParts
    total_ms: float
    top1: PredictionRecord
    top5: tuple[PredictionRecord, ...]
    worker_id: str | None = None
    chosen_split: int | None = None
    reason: str = ""
    predicted_ms: float | None = None  # the chooser's estimate for the chosen split
    uplink_bps: float | None = None  # the uplink rate the choice assumed
    started_s: float | None = None  # the device's monotonic clock when the request started
    fallback_detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def fallback_label(self) -> str | None:
        """`fallback` as the state message and the console table show it (None: no fallback)."""
        return self.fallback.label(self.fallback_detail) if self.fallback is not None else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "fallback_detail":
                continue
            data[key] = value
            if key == "fallback":  # plain JSON strings, the detail beside the reason
                data[key] = value.value if value is not None else None
                data["fallback_detail"] = self.fallback_detail
        data["top5"] = [asdict(p) for p in self.top5]
        return data
