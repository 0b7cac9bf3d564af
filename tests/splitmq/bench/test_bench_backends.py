"""`splitmq bench backends` runs both backends on the real model and reports ratios of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitmq.cli import main

pytestmark = pytest.mark.slow


def test_the_backend_benchmark_reports_both_backends_side_by_side(
    lite0_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "backends.json"
    argv = ["bench", "backends", "--rounds", "1", "--calls", "2", "--batch", "2"]
    assert main([*argv, "--export-dir", str(lite0_export.parent), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    local = report["local"]["rounds"][0]
    assert report["local"]["median_ratio"] == local["torch_ms"] / local["onnxruntime_ms"]
    assert set(report["tail"]["batches"]) == {"1", "2"}
    assert 0 < report["tail"]["split"] < 18
    assert report["agreement"]["pairs"] == 21 * 19
    assert report["agreement"]["top1_agreement"] == 1.0  # lossless through onnxruntime
    assert report["provenance"]["backends"]["onnxruntime"]
    assert "tail throughput, best of each" in capsys.readouterr().out
