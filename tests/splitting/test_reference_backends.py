"""Shipped device classes per backend: a class states its speed on eager PyTorch, and the same
hardware runs the exported build as much faster as the shipped side-by-side measurement says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitmq.cli import main
from splitting.errors import ProfileError
from splitting.reference import (
    DATA_DIR,
    backend_speedup,
    device_class,
    reference_device,
    reference_model_profile,
)

MODEL = "efficientnet-lite0"


def test_the_onnxruntime_profile_is_the_same_build_measured_on_its_backend() -> None:
    torch_profile = reference_model_profile(MODEL)
    onnx_profile = reference_model_profile(MODEL, "onnxruntime")
    assert onnx_profile.backend == "onnxruntime" and torch_profile.backend == "torch"
    assert onnx_profile.fingerprint == torch_profile.fingerprint
    # The bytes on the wire do not depend on the runtime that computed the tensor much: the
    # natural bottlenecks are the same splits.
    assert onnx_profile.candidates("int8") == torch_profile.candidates("int8")


def test_a_class_on_onnxruntime_runs_the_whole_model_faster_by_the_shipped_ratio() -> None:
    speedup = backend_speedup(MODEL, "onnxruntime")
    report = json.loads((DATA_DIR / f"{MODEL}.backends.json").read_text())
    assert speedup == report["local"]["median_ratio"] > 1.0
    camera = device_class("camera-150ms")
    torch_device = reference_device(camera.name, model=MODEL)
    onnx_device = reference_device(camera.name, model=MODEL, backend="onnxruntime")
    assert torch_device.local_ms == pytest.approx(camera.local_ms)
    assert onnx_device.local_ms == pytest.approx(camera.local_ms / speedup)


def test_a_backend_without_a_shipped_measurement_is_refused() -> None:
    with pytest.raises(ProfileError):
        backend_speedup(MODEL, "openvino")
    with pytest.raises(ProfileError):
        reference_model_profile(MODEL, "openvino")


@pytest.mark.slow
def test_bench_chooser_runs_a_device_class_on_onnxruntime(tmp_path: Path) -> None:
    trace = tmp_path / "steady.up"  # one 1500-byte packet every 2 ms: 6 Mbit/s, 60 s
    trace.write_text("\n".join(str(ms) for ms in range(2, 60_001, 2)) + "\n")
    out = tmp_path / "chooser.json"
    argv = ["bench", "chooser", "--trace", str(trace), "--duration", "60"]
    assert main([*argv, "--device-backend", "onnxruntime", "--json", str(out)]) == 0
    settings = json.loads(out.read_text())["settings"]
    assert "on onnxruntime" in settings["device"]
    assert settings["local_ms"] == pytest.approx(150.0 / backend_speedup(MODEL, "onnxruntime"))
