"""Trace reader and link model: exact on hand-written traces (repetition, gaps, sharing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splitting.traces import (
    PACKET_BYTES,
    PUBLISH_OVERHEAD_BYTES,
    TraceError,
    Uplink,
    UplinkTrace,
    wire_bytes,
)

SHARED_TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"

# Opportunities at 1, 1, 3 and 5 ms; period 5 ms; nothing in (1, 3) nor in (3, 5).
TINY = "1\n1\n3\n5\n"


def tiny_link(capacity: int = 100, one_way_ms: float = 0.0) -> Uplink:
    trace = UplinkTrace.parse(TINY, name="tiny")
    return Uplink(trace, one_way_ms=one_way_ms, payload_per_opportunity=capacity)


def test_parse_takes_the_last_timestamp_as_period():
    trace = UplinkTrace.parse(TINY)
    assert trace.period_ms == 5
    assert trace.per_period == 4
    assert trace.mean_mbit_s == pytest.approx(4 * PACKET_BYTES * 8 / 0.005 / 1e6)


def test_opportunities_repeat_with_the_period():
    trace = UplinkTrace.parse(TINY)
    times = [trace.opportunity_ms(i) for i in range(10)]
    assert times == [1, 1, 3, 5, 6, 6, 8, 10, 11, 11]


@pytest.mark.parametrize(
    ("t_ms", "index"),
    [
        (0, 0),
        (1, 0),  # an opportunity at exactly t is usable
        (1.5, 2),  # the gap (1, 3) has no capacity
        (5, 3),
        (5.0001, 4),  # the next period's first opportunity (6 ms)
        (10, 7),  # a period boundary the previous cycle's last opportunity sits on
        (10.5, 8),
        (15.5, 12),
    ],
)
def test_first_opportunity_at_or_after(t_ms, index):
    assert UplinkTrace.parse(TINY).first_at_or_after(t_ms) == index


def test_a_transfer_takes_the_opportunities_it_needs():
    link = tiny_link(capacity=100)
    delivery = link.send(150, 0.0)  # two opportunities, both at 1 ms
    assert delivery.released_s == pytest.approx(0.001)


def test_backlogged_bytes_share_an_opportunity_and_idle_ones_are_lost():
    link = tiny_link(capacity=100)
    link.send(150, 0.0)  # opportunities 0 and 1 (1 ms), 50 bytes spare in the second
    shared = link.send(40, 0.0005)  # arrives before 1 ms: fits in the spare bytes
    assert shared.released_s == pytest.approx(0.001)
    later = link.send(20, 0.0012)  # after 1 ms: the spare is gone, next is 3 ms
    assert later.released_s == pytest.approx(0.003)
    assert link.send(10, 0.004).released_s == pytest.approx(0.005)


def test_fifo_waits_behind_earlier_bytes_across_the_repetition():
    link = tiny_link(capacity=100)
    first = link.send(400, 0.0)  # all four opportunities of the first period
    assert first.released_s == pytest.approx(0.005)
    second = link.send(300, 0.0)  # queued behind: 6, 6 and 8 ms
    assert second.released_s == pytest.approx(0.008)


def test_one_way_delay_is_added_each_way():
    link = tiny_link(capacity=100, one_way_ms=20)
    delivery = link.send(100, 0.0)
    assert delivery.arrives_s == pytest.approx(0.021)
    assert delivery.acked_s == pytest.approx(0.041)
    assert delivery.sample_s == pytest.approx(0.041)


def test_zero_capacity_gap_delays_a_transfer_to_its_end():
    # 1 opportunity per ms for 10 ms, then a 990 ms outage.
    trace = UplinkTrace(np.arange(1, 11), period_ms=1000, name="gap")
    link = Uplink(trace, one_way_ms=0, payload_per_opportunity=1000)
    assert link.send(3000, 0.0).released_s == pytest.approx(0.003)
    assert link.send(1000, 0.5).released_s == pytest.approx(1.001)  # next period's first


def test_copy_forks_the_state():
    link = tiny_link(capacity=100)
    link.send(150, 0.0)
    fork = link.copy()
    assert fork.send(100, 0.0).released_s == pytest.approx(0.003)
    assert link.send(50, 0.0).released_s == pytest.approx(0.001)  # the original kept its spare


def test_hand_over_must_not_go_back_in_time():
    link = tiny_link()
    link.send(10, 0.004)
    with pytest.raises(TraceError, match="precedes"):
        link.send(10, 0.001)


def test_fixed_rate_trace_has_the_asked_rate():
    trace = UplinkTrace.fixed_rate(12.0)
    assert trace.mean_mbit_s == pytest.approx(12.0)
    assert trace.per_period == 1000
    link = Uplink(trace, one_way_ms=0)
    # 1448 payload bytes per 1-ms opportunity: 100 opportunities for 144,800 bytes.
    assert link.send(144_800, 0.0).released_s == pytest.approx(0.100)


def test_rate_series_counts_capacity_per_bin():
    trace = UplinkTrace(np.arange(1, 11), period_ms=1000, name="gap")
    starts, rates = trace.rate_series(3.0, 1.0)
    assert list(starts) == [0.0, 1.0, 2.0]
    assert rates == pytest.approx([10 * PACKET_BYTES * 8 / 1e6] * 3)


def test_wire_bytes_adds_the_publish_overhead():
    assert wire_bytes(1000) == 1000 + PUBLISH_OVERHEAD_BYTES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("1\nabc\n", "line 2 is not an integer"),
        ("5\n3\n", "decrease"),
        ("0\n0\n", "period"),
    ],
)
def test_bad_traces_are_refused_with_a_reason(text, message):
    with pytest.raises(TraceError, match=message):
        UplinkTrace.parse(text)


def test_missing_trace_file_is_a_trace_error(tmp_path):
    with pytest.raises(TraceError, match="cannot read"):
        UplinkTrace.read(tmp_path / "absent.up")


def test_fixed_rate_needs_a_positive_rate():
    with pytest.raises(TraceError):
        UplinkTrace.fixed_rate(0.0)


@pytest.mark.skipif(not SHARED_TRACES.is_dir(), reason="../shared/traces not present")
def test_real_trace_has_its_documented_mean_rate():
    trace = UplinkTrace.read(SHARED_TRACES / "ATT-LTE-driving.up")
    assert trace.mean_mbit_s == pytest.approx(0.83, abs=0.01)
    assert trace.period_ms / 1000 == pytest.approx(1012, abs=1)
