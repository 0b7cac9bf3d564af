"""A device's choices judged from its own records: regret, slow local choices, re-tests."""

from __future__ import annotations

import pytest

from device_node.judgement import judge
from device_node.records import (
    RACE_LOCAL_MS,
    Fallback,
    LatencyParts,
    PredictionRecord,
    ResultRecord,
)

LOCAL = 18
TOP = PredictionRecord(1, "goldfish", 0.9)


def record(
    at: float,
    total_ms: float,
    *,
    split: int = 0,
    offloaded: bool = True,
    fallback: Fallback | None = None,
    reason: str = "lowest predicted",
    device: str = "dev1",
    race_local_ms: float = 0.0,
) -> ResultRecord:
    head = total_ms if split == LOCAL else 0.0
    return ResultRecord(
        request_id=f"{device}-{at}",
        device_id=device,
        image="x",
        split=split,
        offloaded=offloaded,
        fallback=fallback,
        bytes_sent=0,
        latency=LatencyParts(head_ms=head, encode_ms=5.0 if offloaded else 0.0),
        total_ms=total_ms,
        top1=TOP,
        top5=(TOP,),
        chosen_split=split,
        reason=reason,
        started_s=at,
        extra={RACE_LOCAL_MS: race_local_ms} if race_local_ms else {},
    )


def test_a_local_choice_slower_than_nearby_offloads_is_counted_with_its_regret():
    records = [
        record(0.0, 60.0),
        record(0.2, 70.0),
        record(0.4, 150.0, split=LOCAL, offloaded=False),  # 85 ms worse than the offloads
        record(20.0, 140.0, split=LOCAL, offloaded=False),  # nothing to compare with nearby
    ]
    verdict = judge(records)["dev1"]
    assert verdict.local_by_choice == 2
    assert verdict.local_slower_than_offloads == 1
    assert verdict.local_slower_share == 0.5
    # The offloads' regret against local (150 ms) is 0; the local choice's is 150 - 65.
    assert verdict.regret_ms_mean == pytest.approx(85.0 / 4)
    assert verdict.explorations == 0


def test_re_tests_are_counted_and_racing_work_is_the_devices_compute():
    records = [
        record(0.0, 150.0, split=LOCAL, offloaded=False),
        record(0.2, 60.0, reason="explore", race_local_ms=40.0),
        record(0.4, 160.0, split=LOCAL, offloaded=False),
    ]
    verdict = judge(records)["dev1"]
    assert verdict.explorations == 1
    assert verdict.device_compute_ms_mean == pytest.approx((150.0 + 45.0 + 160.0) / 3)
    assert "re-tested offloading 1x" in verdict.to_dict("dev1")["line"]


def test_fallbacks_are_not_local_choices_and_devices_are_judged_apart():
    records = [
        record(0.0, 300.0, fallback=Fallback.TIMEOUT, offloaded=False),
        record(0.1, 50.0, device="dev2"),
    ]
    verdicts = judge(records)
    assert set(verdicts) == {"dev1", "dev2"}
    assert verdicts["dev1"].local_by_choice == 0
    assert verdicts["dev2"].regret_ms_mean == 0.0
