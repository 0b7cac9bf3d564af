"""`splitmq bench backends` runs the backends on the real model and reports ratios of them."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from splitmq.cli import main
from splitting.onnx_blocks import BuildMismatchError, read_manifest

pytestmark = pytest.mark.slow

NO_OPENVINO = "openvino is not installed: pip install 'splitmq[openvino]' to time it"


def run_bench(export: Path, out: Path, *extra: str) -> dict:
    argv = ["bench", "backends", "--rounds", "1", "--calls", "2", "--batch", "2", *extra]
    assert main([*argv, "--export-dir", str(export.parent), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_the_backend_benchmark_reports_both_backends_side_by_side(
    lite0_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_bench(lite0_export, tmp_path / "backends.json", "--no-openvino")
    local = report["local"]["rounds"][0]
    assert report["local"]["median_ratio"] == local["torch_ms"] / local["onnxruntime_ms"]
    head = report["head"]["rounds"][0]
    assert report["head"]["median_ratio"] == head["torch_ms"] / head["onnxruntime_ms"]
    # The device's head stops where the worker's tail starts: it is cheaper than the whole run.
    assert head["onnxruntime_ms"] < local["onnxruntime_ms"]
    assert set(report["tail"]["batches"]) == {"1", "2"}
    assert 0 < report["tail"]["split"] < 18
    assert report["agreement"]["pairs"] == 21 * 19
    assert report["agreement"]["top1_agreement"] == 1.0  # lossless through onnxruntime
    assert report["provenance"]["backends"]["onnxruntime"]
    assert report["openvino"] is None and local["openvino_ms"] == {}
    assert "tail throughput, best of each" in capsys.readouterr().out


def test_openvino_is_timed_in_the_same_rounds_at_float32_and_its_default(
    lite0_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino", reason=NO_OPENVINO)
    report = run_bench(lite0_export, tmp_path / "backends.json")
    section = report["openvino"]
    assert section["version"] == metadata.version("openvino")
    assert set(section["runs"]) == {"f32", section["default_precision"]}
    f32 = section["runs"]["f32"]
    assert f32["precision"] == "f32"
    # At float32 the same graphs give the same answers as PyTorch at every split.
    assert f32["agreement"]["pairs"] == 21 * 19
    assert f32["agreement"]["top1_agreement"] == 1.0
    assert f32["agreement"]["max_abs_logit_diff"] < 1e-3
    tail = report["tail"]["batches"]
    for paired in (report["local"], report["head"], tail["1"]):
        one = paired["rounds"][0]
        for precision in section["runs"]:
            ratio = one["onnxruntime_ms"] / one["openvino_ms"][precision]
            assert paired["openvino_vs_onnxruntime"][precision] == ratio
    assert set(tail["1"]["openvino_per_s"]) == set(section["runs"])
    assert tail["2"]["openvino_per_s"] == {}  # batch 1 only
    assert "OpenVINO" in capsys.readouterr().out


def test_openvino_refuses_a_build_that_is_not_the_expected_one(
    lite0_export: Path, changed_build: Path
) -> None:
    pytest.importorskip("openvino", reason=NO_OPENVINO)
    from splitmq.bench.openvino_chain import OpenVinoChain

    fingerprint = read_manifest(lite0_export).fingerprint
    with pytest.raises(BuildMismatchError, match="0123456789abcdef"):
        OpenVinoChain(lite0_export, expected_fingerprint="0123456789abcdef", precision="f32")
    with pytest.raises(BuildMismatchError, match="block_03"):
        OpenVinoChain(changed_build, expected_fingerprint=fingerprint, precision="f32")
