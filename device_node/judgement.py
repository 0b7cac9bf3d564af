"""How well a device chose, judged from its own records where it ran: the live system's view.

For each request, `regret` is its latency minus the best typical latency (median) the same
device got from any other option (a split chosen, local included) within `window_s` of it; 0
where no other option ran nearby or where the request's was the best. A local choice is
"slower than offloading" when its latency is above the median of that device's offloads within
the window. Re-tests (`reason == "explore"`) are counted, and the device's own compute per
request (head, encode, local tail: the energy proxy) is reported beside them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from device_node.records import RACE_LOCAL_MS, ResultRecord

#: "Within a few seconds": options compared over this window around each request.
DEFAULT_WINDOW_S = 5.0


@dataclass(frozen=True)
class DeviceJudgement:
    """One device's choices, judged against its own nearby outcomes."""

    requests: int
    local_by_choice: int
    local_slower_than_offloads: int  # local choices slower than its offloads nearby
    explorations: int
    regret_ms_mean: float
    regret_share: float  # mean regret over mean latency
    device_compute_ms_mean: float

    @property
    def local_slower_share(self) -> float:
        return (
            self.local_slower_than_offloads / self.local_by_choice if self.local_by_choice else 0.0
        )

    def to_dict(self, device: str) -> dict[str, Any]:
        """The JSON form, with the one-line reading under "line"."""
        share = self.local_slower_share
        return {**asdict(self), "local_slower_share": share, "line": self.line(device)}

    def line(self, device: str) -> str:
        """The judgement in one line a user can read."""
        return (
            f"{device}: chose local {self.local_by_choice} of {self.requests} "
            f"({self.local_slower_than_offloads} slower than its offloads nearby), "
            f"re-tested offloading {self.explorations}x, regret {self.regret_ms_mean:.1f} ms "
            f"a request ({self.regret_share:.0%} of its mean), "
            f"own compute {self.device_compute_ms_mean:.0f} ms a request"
        )


def judge(
    records: Sequence[ResultRecord], *, window_s: float = DEFAULT_WINDOW_S
) -> dict[str, DeviceJudgement]:
    """Every device's judgement, by device id (records without a start time are skipped)."""
    timed = [r for r in records if r.started_s is not None]
    devices = sorted({r.device_id for r in timed})
    return {d: _judge_device([r for r in timed if r.device_id == d], window_s) for d in devices}


def _judge_device(mine: list[ResultRecord], window_s: float) -> DeviceJudgement:
    regrets = [_regret(r, mine, window_s) for r in mine]
    local = [r for r in mine if _chose_local(r)]
    slower = [r for r in local if _slower_than_offloads(r, mine, window_s)]
    mean_ms = statistics.fmean(r.total_ms for r in mine)
    regret = statistics.fmean(regrets)
    return DeviceJudgement(
        requests=len(mine),
        local_by_choice=len(local),
        local_slower_than_offloads=len(slower),
        explorations=sum(r.reason == "explore" for r in mine),
        regret_ms_mean=regret,
        regret_share=regret / mean_ms if mean_ms > 0 else 0.0,
        device_compute_ms_mean=statistics.fmean(_device_compute_ms(r) for r in mine),
    )


def _option(record: ResultRecord) -> int:
    """The option the device chose: the split of its decision (n: local)."""
    return record.chosen_split if record.chosen_split is not None else record.split


def _chose_local(record: ResultRecord) -> bool:
    return not record.offloaded and record.fallback is None


def _near(record: ResultRecord, other: ResultRecord, window_s: float) -> bool:
    assert record.started_s is not None and other.started_s is not None
    return other is not record and abs(other.started_s - record.started_s) <= window_s


def _regret(record: ResultRecord, mine: list[ResultRecord], window_s: float) -> float:
    by_option: dict[int, list[float]] = {}
    for other in mine:
        if _near(record, other, window_s) and _option(other) != _option(record):
            by_option.setdefault(_option(other), []).append(other.total_ms)
    if not by_option:
        return 0.0
    best = min(statistics.median(latencies) for latencies in by_option.values())
    return max(0.0, record.total_ms - best)


def _slower_than_offloads(record: ResultRecord, mine: list[ResultRecord], window_s: float) -> bool:
    offloads = [o.total_ms for o in mine if o.offloaded and _near(record, o, window_s)]
    return bool(offloads) and record.total_ms > statistics.median(offloads)


def _device_compute_ms(record: ResultRecord) -> float:
    parts = record.latency
    raced = float(record.extra.get(RACE_LOCAL_MS, 0.0))
    return parts.head_ms + parts.encode_ms + parts.local_tail_ms + raced
