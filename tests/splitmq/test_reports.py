"""One latency summary shape for every report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitmq.reports import LatencyStats, latency_stats


def test_a_summary_carries_count_mean_percentiles_and_max() -> None:
    samples = [float(v) for v in range(1, 101)]
    stats = LatencyStats.of(samples)
    assert stats.count == 100
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.p50_ms == pytest.approx(float(np.percentile(samples, 50)))
    assert stats.p99_ms == pytest.approx(float(np.percentile(samples, 99)))
    assert stats.max_ms == 100.0
    ordered = [stats.p50_ms, stats.p90_ms, stats.p95_ms, stats.p99_ms, stats.max_ms]
    assert ordered == sorted(v for v in ordered if v is not None)


def test_no_samples_give_nulls_not_nan() -> None:
    empty = latency_stats([])
    assert empty["count"] == 0
    assert all(empty[key] is None for key in empty if key != "count")
    assert json.loads(json.dumps(empty, allow_nan=False)) == empty


def test_the_json_keys_are_the_documented_ones() -> None:
    assert list(latency_stats([1.0])) == [
        "count",
        "mean_ms",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
    ]
