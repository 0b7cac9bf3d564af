"""A worker on the onnxruntime backend: batched requests run the exported build and say so;
a request that asks for the exact answer still runs on PyTorch, bit for bit. Real lite0
frames through a real Mosquitto."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from edge_worker.config import WorkerConfig
from edge_worker.errors import RunnerError
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitmq.bench.light_device import LightDevice
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.registry import load_model
from tests.support.exact import SPLIT, lossless_frame, reference_scores

MODEL = "efficientnet-lite0"


@pytest.fixture(scope="module")
def lite0() -> SplitModel:
    return load_model(MODEL)


def onnx_worker(broker: BrokerSettings, export: Path) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "broker": broker,
            "worker_id": "onnx-worker",
            "models": [{"name": MODEL, "splits": [0, SPLIT]}],
            "device": "cpu",
            "backend": "onnxruntime",
            "export_dir": str(export.parent),
            "max_batch": 4,
            "max_wait_ms": 500.0,
        }
    )


def top1(model: SplitModel, prepared: np.ndarray) -> int:
    return int(model.forward(model.preprocess(prepared)).argmax())


@pytest.mark.integration
def test_batched_requests_run_on_onnxruntime_and_exact_ones_on_pytorch(
    broker_settings: BrokerSettings, lite0: SplitModel, lite0_export: Path
) -> None:
    images = [lite0.prepare_image(image) for _, image in sample_images()[:6]]
    config = onnx_worker(broker_settings, lite0_export)
    runner = ModelTailRunner.from_config(config)
    ids = [f"r-{i}" for i in range(6)]
    exact_ids = {"r-4", "r-5"}
    device = LightDevice(broker_settings, "onnx-device")
    topic = device.topics.request(MODEL, SPLIT, device.device_id)
    with EdgeWorker(config, runner):
        device.start()
        try:
            for i, rid in enumerate(ids):
                device.send(
                    topic, lossless_frame(lite0, images[i], rid), rid, exact=rid in exact_ids
                )
            assert device.wait(ids, timeout_s=60)
        finally:
            device.stop()
    for i, rid in enumerate(ids):
        result = device.replies[rid].message
        assert result is not None and result.status == "ok"
        reference = reference_scores(lite0, images[i])
        if rid in exact_ids:
            assert (result.backend, result.exact) == ("torch", True)
            assert [p.score for p in result.top5] == reference
        else:
            assert (result.backend, result.exact) == ("onnxruntime", False)
            assert result.top5[0].index == top1(lite0, images[i])
            assert result.top5[0].score == pytest.approx(reference[0], abs=1e-4)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="this onnxruntime has its CUDA provider",
)
def test_a_gpu_worker_on_onnxruntime_without_its_cuda_provider_is_refused_by_name(
    lite0: SplitModel,
) -> None:
    with pytest.raises(RunnerError, match="onnxruntime-gpu"):
        ModelTailRunner({MODEL: lite0}, {MODEL: [SPLIT]}, device="cuda", backend="onnxruntime")
